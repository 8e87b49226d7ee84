# Sourced by scripts/test and scripts/mutate: installs what the tests need on a fresh machine
# (Debian packages, then the project with its test extras, in .venv where the system's Python
# refuses pip) and leaves that environment active. Extra pip requirements: TEST_DEPS_PIP.

# Debian packages the suite talks to, by the command that shows each one is there.
declare -A debian_packages=(
  [pg_ctlcluster]=postgresql
  [initdb]=postgresql
  [sipp]=sip-tester
  [chromium]=chromium
  [kamailio]=kamailio
  [slapd]=slapd
  [ldapadd]=ldap-utils
  [fail2ban-regex]=fail2ban
  [systemd-analyze]=systemd
  [xmlsec1]=xmlsec1
)
missing=()
for command in "${!debian_packages[@]}"; do
  if ! command -v "$command" >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/"$command" >/dev/null 2>&1; then
    missing+=("${debian_packages[$command]}")
  fi
done
# Packages that bring a file rather than a command.
if ! ls /usr/lib/*/kamailio/modules/db_postgres.so >/dev/null 2>&1; then
  missing+=(kamailio-postgres-modules)
fi
# python-ldap (the ldap extra) builds against libldap and libsasl2.
if [ ! -e /usr/include/ldap.h ]; then
  missing+=(libldap-dev)
fi
if [ ! -e /usr/include/sasl/sasl.h ]; then
  missing+=(libsasl2-dev)
fi
# Debian's python3 has no venv module without python3-venv (needed below when pip may not
# install into the system's Python).
if ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(printf '%s\n' "${missing[@]}" | sort -u)
fi

# Debian's system Python refuses `pip install` (PEP 668): outside a virtual environment,
# use (or make) .venv, the one the README's set-up command makes.
if [ -z "${VIRTUAL_ENV:-}" ] && python3 -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'; then
  [ -x .venv/bin/python3 ] || python3 -m venv .venv
  . .venv/bin/activate
fi
python3 -m pip install -q --disable-pip-version-check -e '.[test,fast,ldap]' ${TEST_DEPS_PIP:-}
