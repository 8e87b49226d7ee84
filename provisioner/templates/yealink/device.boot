{#-
  Yealink boot file, served as <mac>.boot and as y000000000000.boot (rendered per device).
  Sources: docs/vendors/yealink.md
-#}
#!version:1.0.0.1
{% for name in includes %}
include:config "{{ name }}"
{% endfor %}
