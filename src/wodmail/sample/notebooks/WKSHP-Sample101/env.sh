#!/bin/sh
# generated for student{{ STDID }}
{% if MODEWS == 'CHLG' %}
export MODE=challenge
{% endif %}
export WORKSHOP={{ WORKSHOP }}
