"""The lifecycle: the four verbs (CREATE, CLEANUP, RESET, PURGE) as named steps.

`verbs` is what each verb does, step by step; `backend` holds the ports it may call
(accounts, deploy, hooks, portal, hub); `workshop` reads an order's workshop record;
`appliance` computes its appliance target; `preview` is `wodmail render`.
"""
