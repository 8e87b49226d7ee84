{#-
  Yealink boot file, served as <mac>.boot and as y000000000000.boot (rendered per device).
  Confirmed (Yealink Administrator's Guide for SIP-T2/T4/T5/CP920 and for VP59/T58A/CP960,
  "Boot Files"): the first line "#!version:1.0.0.1"; include:config "<path>" with a path
  relative to the boot file; the files are downloaded in the order listed, later ones win.
  Not confirmed: nothing in this file.
-#}
#!version:1.0.0.1
{% for name in includes %}
include:config "{{ name }}"
{% endfor %}
