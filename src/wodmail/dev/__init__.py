"""For development and the README demo only: the sandbox, the demo and peer stand-ins.

The daemon never imports this package (a test checks that importing `wodmail.service`
loads none of it); `wodmail demo` does.
"""
