"""Every text of the web pages as ``key: (English, German)``.

Placeholders are ``{name}``; both languages of one key use the same names (a test checks).
"""

# Typography for people: ranges take an en dash (U+2013), as both languages write them.
# ruff: noqa: RUF001

from __future__ import annotations

CATALOG: dict[str, tuple[str, str]] = {
    # --- frame -----------------------------------------------------------------------------
    "app.name": ("Provisioner", "Provisioner"),
    "nav.main": ("Main navigation", "Hauptnavigation"),
    "nav.skip": ("Skip to content", "Zum Inhalt springen"),
    "nav.users": ("Users", "Benutzer"),
    "nav.devices": ("Devices", "Geräte"),
    "nav.audit": ("Audit log", "Audit-Protokoll"),
    "nav.me": ("My account", "Mein Konto"),
    "nav.logout": ("Sign out", "Abmelden"),
    "nav.language": ("Language", "Sprache"),
    "nav.signed_in_as": ("Signed in as {user}", "Angemeldet als {user}"),
    "lang.de": ("Deutsch", "Deutsch"),
    "lang.en": ("English", "English"),
    "banner.impersonating": (
        "You are acting as {name} ({user}); you signed in as {admin}.",
        "Sie handeln als {name} ({user}); angemeldet sind Sie als {admin}.",
    ),
    "banner.label": ("Impersonation", "Identitätsübernahme"),
    "banner.back": ("Back to admin", "Zurück zur Verwaltung"),
    # --- shared words ----------------------------------------------------------------------
    "common.search": ("Search", "Suchen"),
    "common.previous": ("Previous page", "Vorherige Seite"),
    "common.next": ("Next page", "Nächste Seite"),
    "common.pages": ("Pages", "Seiten"),
    "common.range": ("{first}–{last} of {total}", "{first}–{last} von {total}"),
    "common.empty": ("Nothing found.", "Nichts gefunden."),
    "common.never": ("never", "nie"),
    "common.none": ("none", "keine"),
    "common.yes": ("yes", "ja"),
    "common.no": ("no", "nein"),
    "common.time_utc": ("{time} UTC", "{time} UTC"),
    "common.error_prefix": ("Error:", "Fehler:"),
    "field.username": ("Username", "Benutzername"),
    "field.display_name": ("Name", "Name"),
    "field.extension": ("Extension", "Durchwahl"),
    "field.email": ("Email", "E-Mail"),
    "field.auth_backend": ("Sign-in through", "Anmeldung über"),
    "field.language": ("Language", "Sprache"),
    "field.role": ("Role", "Rolle"),
    "field.pin": ("PIN", "PIN"),
    "field.password": ("Password", "Passwort"),
    "backend.local": ("Local password", "Lokales Passwort"),
    "backend.ldap": ("LDAP", "LDAP"),
    "backend.saml": ("SAML", "SAML"),
    "role.user": ("User", "Benutzer"),
    "role.admin": ("Administrator", "Administrator"),
    # --- login and passwords ---------------------------------------------------------------
    "login.title": ("Sign in", "Anmelden"),
    "login.intro": (
        "Sign in with your username and password.",
        "Melden Sie sich mit Benutzername und Passwort an.",
    ),
    "login.submit": ("Sign in", "Anmelden"),
    "login.sso": ("Sign in with single sign-on", "Mit Single Sign-on anmelden"),
    "login.sso_or": ("or", "oder"),
    "saml.signed_in": ("Signed in", "Angemeldet"),
    "saml.continue": ("Continue", "Weiter"),
    "saml.failed": ("Single sign-on failed", "Anmeldung per Single Sign-on fehlgeschlagen"),
    "saml.code": ("Error code", "Fehlercode"),
    "password.title": ("Change your password", "Passwort ändern"),
    "password.required": (
        "Your password is temporary. Choose your own password to continue.",
        "Ihr Passwort ist vorläufig. Wählen Sie ein eigenes Passwort, um fortzufahren.",
    ),
    "password.current": ("Current password", "Aktuelles Passwort"),
    "password.new": ("New password", "Neues Passwort"),
    "password.repeat": ("Repeat the new password", "Neues Passwort wiederholen"),
    "password.rules": (
        "{min} to {max} characters: letters A–Z, digits, spaces and ASCII punctuation; "
        "not the username or email address; not a common password.",
        "{min} bis {max} Zeichen: Buchstaben A–Z, Ziffern, Leerzeichen und ASCII-Satzzeichen; "
        "nicht der Benutzername oder die E-Mail-Adresse; kein häufig benutztes Passwort.",
    ),
    "password.submit": ("Change password", "Passwort ändern"),
    "password.external": (
        "Your password is managed by {backend}; change it there.",
        "Ihr Passwort wird über {backend} verwaltet; ändern Sie es dort.",
    ),
    "password.no_current_needed": (
        "You act for this user as an administrator: no current password is needed.",
        "Sie handeln als Administrator für diesen Benutzer: Das aktuelle Passwort ist nicht nötig.",
    ),
    # --- self-service ----------------------------------------------------------------------
    "me.title": ("My account", "Mein Konto"),
    "me.details": ("Your details", "Ihre Angaben"),
    "me.pin": ("Phone PIN", "Telefon-PIN"),
    "me.pin_intro": (
        "You use the PIN to sign in at desk and DECT phones.",
        "Mit der PIN melden Sie sich an Tisch- und DECT-Telefonen an.",
    ),
    "me.password": ("Password", "Passwort"),
    "pin.new": ("New PIN", "Neue PIN"),
    "pin.rules": (
        "{min} to {max} digits; not one digit repeated, no run such as 123456, not the "
        "extension, not a common PIN.",
        "{min} bis {max} Ziffern; nicht eine Ziffer wiederholt, keine Folge wie 123456, nicht "
        "die Durchwahl, keine häufig benutzte PIN.",
    ),
    "pin.submit": ("Apply PIN", "PIN übernehmen"),
    "pin.state_set": ("PIN set {when}", "PIN gesetzt {when}"),
    "pin.state_unset": ("No PIN set", "Keine PIN gesetzt"),
    "pin.locked": ("PIN entry locked until {when}", "PIN-Eingabe gesperrt bis {when}"),
    # --- users -----------------------------------------------------------------------------
    "users.title": ("Users", "Benutzer"),
    "users.search": (
        "Search by name, username, extension or email",
        "Suche nach Name, Benutzername, Durchwahl oder E-Mail",
    ),
    "users.new": ("New user", "Neuer Benutzer"),
    "users.new_title": ("New user", "Neuer Benutzer"),
    "users.create": ("Create user", "Benutzer anlegen"),
    "users.username_help": (
        "Lower-case letters, digits and . _ @ -; cannot be changed later.",
        "Kleinbuchstaben, Ziffern und . _ @ -; lässt sich später nicht ändern.",
    ),
    "users.optional": ("optional", "optional"),
    "users.filter_backend": ("Sign-in through", "Anmeldung über"),
    "users.filter_disabled": ("State", "Zustand"),
    "users.any": ("any", "alle"),
    "users.enabled_only": ("enabled", "aktiv"),
    "users.disabled_only": ("disabled", "deaktiviert"),
    "users.filter": ("Filter", "Filtern"),
    "user.disabled": ("disabled", "deaktiviert"),
    "user.disabled_by.admin": (
        "Disabled by an administrator {when}: cannot sign in or use a PIN; devices stay assigned.",
        "Von einem Administrator deaktiviert {when}: keine Anmeldung und keine PIN; die Geräte "
        "bleiben zugeordnet.",
    ),
    "user.disabled_by.directory": (
        "Disabled by the directory sync {when} (no longer in the directory): cannot sign in or "
        "use a PIN; devices stay assigned. Enabled again when the directory lists the user.",
        "Vom Verzeichnisabgleich deaktiviert {when} (nicht mehr im Verzeichnis): keine Anmeldung "
        "und keine PIN; die Geräte bleiben zugeordnet. Wieder aktiv, sobald das Verzeichnis den "
        "Benutzer wieder führt.",
    ),
    "user.from_directory": (
        "from the directory ({attribute})",
        "aus dem Verzeichnis ({attribute})",
    ),
    "user.directory_entry": ("Directory entry", "Verzeichniseintrag"),
    "user.directory_note": (
        "Fields marked as coming from the directory change there; the sync brings them here.",
        "Als aus dem Verzeichnis stammend markierte Felder werden dort geändert; der Abgleich "
        "übernimmt sie hierher.",
    ),
    "device.user_disabled": ("user disabled", "Benutzer deaktiviert"),
    "user.title": ("User {user}", "Benutzer {user}"),
    "user.identity": ("Identity", "Identität"),
    "user.devices": ("Devices", "Geräte"),
    "user.no_devices": (
        "No device carries this user.",
        "Kein Gerät ist diesem Benutzer zugeordnet.",
    ),
    "user.actions": ("Actions", "Aktionen"),
    "user.impersonate": ("Impersonate", "Als dieser Benutzer handeln"),
    "user.impersonate_help": (
        "Opens the self-service pages as this user; the audit log names you.",
        "Öffnet die Selbstbedienung als dieser Benutzer; das Audit-Protokoll nennt Sie.",
    ),
    "user.reprovision": ("Re-provision devices", "Geräte neu provisionieren"),
    "user.audit": ("Audit log of this user", "Audit-Protokoll dieses Benutzers"),
    "cred.title": ("PIN and password", "PIN und Passwort"),
    "cred.password_legend": ("Password", "Passwort"),
    "cred.new_password": ("New password", "Neues Passwort"),
    "cred.temporary": (
        "Temporary: the user must choose a new password at the next sign-in",
        "Vorläufig: Der Benutzer muss bei der nächsten Anmeldung ein neues Passwort wählen",
    ),
    "cred.random_hint": (
        "For a random password leave the field empty; it is always temporary.",
        "Für ein zufälliges Passwort lassen Sie das Feld leer; es ist immer vorläufig.",
    ),
    "cred.set": ("Change password, don't send email", "Passwort ändern, keine E-Mail senden"),
    "cred.set_and_email": (
        "Change password, send email (New password)",
        "Passwort ändern, E-Mail senden (Neues Passwort)",
    ),
    "cred.random_and_email": (
        "Set random password, send email (New password)",
        "Zufälliges Passwort setzen, E-Mail senden (Neues Passwort)",
    ),
    "cred.random_confirm": (
        "Set a random password for {user} and send it by email?",
        "Ein zufälliges Passwort für {user} setzen und per E-Mail senden?",
    ),
    "cred.external": (
        "{user} signs in through {backend}; the password is managed there.",
        "{user} meldet sich über {backend} an; das Passwort wird dort verwaltet.",
    ),
    "cred.no_email": (
        "The user has no email address, so no password can be sent.",
        "Der Benutzer hat keine E-Mail-Adresse, daher kann kein Passwort gesendet werden.",
    ),
    "cred.bad_email": (
        "The user's email address is not valid, so no password can be sent.",
        "Die E-Mail-Adresse des Benutzers ist ungültig, daher kann kein Passwort gesendet werden.",
    ),
    "cred.no_mailer": (
        "No mail server is configured, so no password can be sent.",
        "Es ist kein Mailserver eingerichtet, daher kann kein Passwort gesendet werden.",
    ),
    "cred.password_set": ("Password set {when}", "Passwort gesetzt {when}"),
    "cred.password_unset": ("No password set", "Kein Passwort gesetzt"),
    "cred.must_change": (
        "must be changed at the next sign-in",
        "muss bei der nächsten Anmeldung geändert werden",
    ),
    # --- devices ---------------------------------------------------------------------------
    "devices.title": ("Devices", "Geräte"),
    "devices.search": (
        "Search by MAC address, label, vendor or model",
        "Suche nach MAC-Adresse, Bezeichnung, Hersteller oder Modell",
    ),
    "devices.new_phones": ("New phones", "Neue Telefone"),
    "devices.new_phones_help": (
        "Phones that fetched with the bootstrap credential but were never added. They get a "
        "minimal configuration without any SIP account; add one to give it its full "
        "configuration.",
        "Telefone, die mit den Bootstrap-Zugangsdaten abgerufen haben, aber nie hinzugefügt "
        "wurden. Sie erhalten eine Minimalkonfiguration ohne SIP-Konto; fügen Sie eines hinzu, "
        "damit es seine vollständige Konfiguration erhält.",
    ),
    "devices.new_phones_more": (
        "The {shown} most recently seen of {total} are shown; all of them: provisioner device "
        "discovered, or GET /api/v1/devices/discovered.",
        "Die {shown} zuletzt gesehenen von {total} werden gezeigt; alle: provisioner device "
        "discovered oder GET /api/v1/devices/discovered.",
    ),
    "devices.new_phone_seen": (
        "Firmware {firmware} · from {source} · first seen {first} · last seen {last}",
        "Firmware {firmware} · von {source} · zuerst gesehen {first} · zuletzt gesehen {last}",
    ),
    "devices.adopt_model": ("Model", "Modell"),
    "devices.adopt_user": ("User on line 1 (optional)", "Benutzer auf Leitung 1 (optional)"),
    "devices.adopt_dect": (
        "Assign the handsets on the device page once it is added.",
        "Die Mobilteile ordnen Sie nach dem Hinzufügen auf der Geräteseite zu.",
    ),
    "devices.adopt": ("Add device", "Gerät hinzufügen"),
    "devices.added": ("Added devices", "Hinzugefügte Geräte"),
    "device.title": ("Device {mac}", "Gerät {mac}"),
    "device.mac": ("MAC address", "MAC-Adresse"),
    "device.model": ("Vendor and model", "Hersteller und Modell"),
    "device.kind": ("Kind", "Art"),
    "device.model_generic": (
        "not in the model table: served with the family's generic configuration",
        "nicht in der Modelltabelle: erhält die allgemeine Konfiguration der Modellreihe",
    ),
    "device.label": ("Label", "Bezeichnung"),
    "device.site": ("Site", "Standort"),
    "device.revision": ("Revision", "Revision"),
    "device.fetched": ("Fetched", "Abgerufen"),
    "device.revisions": ("Current / fetched revision", "Aktuelle / abgerufene Revision"),
    "device.push_state": ("Push state", "Push-Status"),
    "device.last_notify": ("Last notify", "Letzte Benachrichtigung"),
    "device.notify_result": ("{result}, {when}", "{result}, {when}"),
    "device.overview": ("Overview", "Übersicht"),
    "device.rendered_at": ("Rendered", "Erzeugt"),
    "device.render_error": ("Render error", "Fehler beim Erzeugen"),
    "device.last_fetch": ("Last fetch", "Letzter Abruf"),
    "device.fetch_detail": (
        "revision {revision} ({file}) from {source}, {when}",
        "Revision {revision} ({file}) von {source}, {when}",
    ),
    "device.up_to_date": (
        "The device has fetched the current revision.",
        "Das Gerät hat die aktuelle Revision abgerufen.",
    ),
    "device.behind": (
        "The device has not fetched the current revision yet.",
        "Das Gerät hat die aktuelle Revision noch nicht abgerufen.",
    ),
    "device.never_fetched": (
        "The device has never fetched its configuration.",
        "Das Gerät hat seine Konfiguration noch nie abgerufen.",
    ),
    "device.reprovision": ("Re-provision", "Neu provisionieren"),
    "device.reprovision_help": (
        "Renders the configuration again and makes the device fetch it now.",
        "Erzeugt die Konfiguration neu und lässt das Gerät sie jetzt abrufen.",
    ),
    "device.access_code": ("Access code", "Anmelde-PIN (Access Code)"),
    "device.access_code_help": (
        "The code a handset enters to subscribe to this DECT system. It is not a user's PIN "
        "and no PIN change alters it. Leave the field empty for a new random code.",
        "Der Code, den ein Mobilteil zum Anmelden an diesem DECT-System eingibt. Er ist keine "
        "Benutzer-PIN und ändert sich bei keiner PIN-Änderung. Lassen Sie das Feld leer für "
        "einen neuen Zufallscode.",
    ),
    "device.access_code_new": ("Replace access code", "Access Code ersetzen"),
    "device.assignments": ("Assignments", "Zuordnungen"),
    "device.no_assignments": ("No user is assigned.", "Kein Benutzer zugeordnet."),
    "device.slot": ("Line / handset", "Leitung / Mobilteil"),
    "device.user": ("User", "Benutzer"),
    "device.sip_user": ("SIP account", "SIP-Konto"),
    "device.ipui": ("IPUI", "IPUI"),
    "device.jobs": ("Recent push jobs", "Letzte Push-Aufträge"),
    "device.no_jobs": ("No push jobs yet.", "Noch keine Push-Aufträge."),
    "device.preview": (
        "Configuration preview (secrets masked)",
        "Konfigurationsvorschau (Geheimnisse maskiert)",
    ),
    "device.preview_failed": (
        "The configuration cannot be rendered now: {error}",
        "Die Konfiguration lässt sich derzeit nicht erzeugen: {error}",
    ),
    "kind.desk": ("Desk phone", "Tischtelefon"),
    "kind.dect": ("DECT system", "DECT-System"),
    "push.pending": ("pending", "ausstehend"),
    "push.scheduled": ("waits for maintenance window", "wartet auf Wartungsfenster"),
    "push.notified": ("notified", "benachrichtigt"),
    "push.fetched": ("fetched", "abgerufen"),
    "push.failed": ("failed", "fehlgeschlagen"),
    "push.none": ("no job", "kein Auftrag"),
    "job.id": ("Job", "Auftrag"),
    "job.state": ("State", "Status"),
    "job.reason": ("Reason", "Anlass"),
    "job.attempts": ("Attempts", "Versuche"),
    "job.error": ("Last error", "Letzter Fehler"),
    "job.updated": ("Updated", "Aktualisiert"),
    # --- audit -----------------------------------------------------------------------------
    "audit.title": ("Audit log", "Audit-Protokoll"),
    "audit.user": ("User", "Benutzer"),
    "audit.user_help": (
        "Matches the affected user, the actor or the impersonating admin.",
        "Trifft den betroffenen Benutzer, den Handelnden oder den übernehmenden Admin.",
    ),
    "audit.action": ("Action", "Aktion"),
    "audit.action_help": (
        "Exactly, or a prefix such as password",
        "Genau, oder ein Präfix wie password",
    ),
    "audit.since": ("Since (date)", "Seit (Datum)"),
    "audit.filter": ("Filter", "Filtern"),
    "audit.at": ("Time", "Zeit"),
    "audit.actor": ("Actor", "Handelnder"),
    "audit.impersonator": ("Impersonating admin", "Übernehmender Admin"),
    "audit.target": ("Affected user", "Betroffener Benutzer"),
    "audit.source": ("Source", "Quelle"),
    "audit.details": ("Details", "Details"),
    "audit.older": ("Older entries", "Ältere Einträge"),
    "audit.newest": ("Newest entries", "Neueste Einträge"),
    # --- confirmations (after a redirect) --------------------------------------------------
    "flash.pin_changed": (
        "PIN changed for {user}. Push jobs queued: {jobs}.",
        "PIN für {user} geändert. Eingereihte Push-Aufträge: {jobs}.",
    ),
    "flash.own_pin_changed": (
        "Your PIN has been changed. Push jobs queued: {jobs}.",
        "Ihre PIN wurde geändert. Eingereihte Push-Aufträge: {jobs}.",
    ),
    "flash.password_set": ("Password changed for {user}.", "Passwort für {user} geändert."),
    "flash.password_emailed": (
        "Password changed for {user}; the email (New password) has been sent.",
        "Passwort für {user} geändert; die E-Mail (Neues Passwort) wurde gesendet.",
    ),
    "flash.random_emailed": (
        "A random password has been set for {user} and sent by email.",
        "Für {user} wurde ein zufälliges Passwort gesetzt und per E-Mail gesendet.",
    ),
    "flash.own_password_changed": (
        "Your password has been changed.",
        "Ihr Passwort wurde geändert.",
    ),
    "flash.access_code_changed": (
        "The access code has been replaced; the DECT system gets it with its next configuration.",
        "Der Access Code wurde ersetzt; das DECT-System erhält ihn mit seiner nächsten "
        "Konfiguration.",
    ),
    "flash.user_created": ("User {user} has been created.", "Benutzer {user} wurde angelegt."),
    "flash.device_adopted": (
        "Device {mac} has been added; it gets its full configuration with its next fetch.",
        "Gerät {mac} wurde hinzugefügt; es erhält seine vollständige Konfiguration beim nächsten "
        "Abruf.",
    ),
    "flash.reprovision_queued": (
        "Re-provisioning started. Push jobs queued: {jobs}.",
        "Neu-Provisionierung gestartet. Eingereihte Push-Aufträge: {jobs}.",
    ),
    "flash.impersonating": ("You are now acting as {user}.", "Sie handeln jetzt als {user}."),
    "flash.impersonation_ended": (
        "You are back in your own account.",
        "Sie sind zurück in Ihrem eigenen Konto.",
    ),
    "flash.signed_out": ("You have been signed out.", "Sie wurden abgemeldet."),
    "flash.session_ended": (
        "Your session has ended; please sign in again.",
        "Ihre Sitzung ist abgelaufen; bitte melden Sie sich erneut an.",
    ),
    # --- error pages -----------------------------------------------------------------------
    "page.403.title": ("Access denied", "Zugriff verweigert"),
    "page.403.text": ("You may not open this page.", "Sie dürfen diese Seite nicht öffnen."),
    "page.404.title": ("Not found", "Nicht gefunden"),
    "page.404.text": ("There is nothing at this address.", "Unter dieser Adresse gibt es nichts."),
    "page.400.title": ("Bad request", "Ungültige Anfrage"),
    "page.400.text": (
        "The request cannot be processed.",
        "Die Anfrage kann nicht verarbeitet werden.",
    ),
    "page.405.title": ("Not allowed", "Nicht erlaubt"),
    "page.405.text": (
        "This address does not accept this kind of request.",
        "Diese Adresse nimmt diese Art Anfrage nicht an.",
    ),
    "page.413.title": ("Too large", "Zu groß"),
    "page.413.text": ("The form data is too large.", "Die Formulardaten sind zu groß."),
    "page.503.title": ("Temporarily unavailable", "Vorübergehend nicht verfügbar"),
    "page.503.text": (
        "The service cannot reach its database just now; please try again in a moment.",
        "Der Dienst erreicht seine Datenbank gerade nicht; bitte versuchen Sie es gleich "
        "noch einmal.",
    ),
    "page.error.title": ("Something went wrong", "Etwas ist schiefgelaufen"),
    "page.error.text": (
        "The request failed; please try again. If it keeps failing, quote reference {ref}.",
        "Die Anfrage ist fehlgeschlagen; bitte versuchen Sie es erneut. Falls das wiederholt "
        "auftritt, nennen Sie die Referenz {ref}.",
    ),
    "page.csrf.title": ("Form refused", "Formular abgelehnt"),
    "page.csrf.text": (
        "The form has expired or did not come from this site. Go back, reload the page and "
        "try again.",
        "Das Formular ist abgelaufen oder stammt nicht von dieser Seite. Gehen Sie zurück, "
        "laden Sie die Seite neu und versuchen Sie es erneut.",
    ),
    "page.home": ("Go to the start page", "Zur Startseite"),
}

# Translations of the domain's error codes (``code.reason`` before ``code``); a code missing
# here shows the domain's English message.
ERRORS: dict[str, tuple[str, str]] = {
    "pin_policy.not_digits": (
        "A PIN consists of digits only.",
        "Eine PIN besteht nur aus Ziffern.",
    ),
    "pin_policy.length": (
        "A PIN has between {min_pin} and {max_pin} digits.",
        "Eine PIN hat {min_pin} bis {max_pin} Ziffern.",
    ),
    "pin_policy.repeated": (
        "A PIN must not repeat one digit.",
        "Eine PIN darf nicht aus einer wiederholten Ziffer bestehen.",
    ),
    "pin_policy.sequence": (
        "A PIN must not be a run of consecutive digits.",
        "Eine PIN darf keine Folge aufeinanderfolgender Ziffern sein.",
    ),
    "pin_policy.extension": (
        "A PIN must not be the extension.",
        "Eine PIN darf nicht die Durchwahl sein.",
    ),
    "pin_policy.common": (
        "This PIN is among the most commonly used; choose another.",
        "Diese PIN gehört zu den am häufigsten benutzten; wählen Sie eine andere.",
    ),
    "password_policy.length": (
        "A password has between {min_password} and {max_password} characters.",
        "Ein Passwort hat {min_password} bis {max_password} Zeichen.",
    ),
    "password_policy.characters": (
        "Use letters A–Z, digits, spaces and ASCII punctuation only.",
        "Verwenden Sie nur Buchstaben A–Z, Ziffern, Leerzeichen und ASCII-Satzzeichen.",
    ),
    "password_policy.personal": (
        "A password must not be the username or email address.",
        "Ein Passwort darf nicht der Benutzername oder die E-Mail-Adresse sein.",
    ),
    "password_policy.common": (
        "This password is too common; choose another.",
        "Dieses Passwort ist zu verbreitet; wählen Sie ein anderes.",
    ),
    "password_policy.unchanged": (
        "The new password must differ from the current one.",
        "Das neue Passwort muss sich vom aktuellen unterscheiden.",
    ),
    "access_code_invalid": (
        "The access code must have exactly the number of digits this device takes.",
        "Der Access Code muss genau so viele Ziffern haben, wie dieses Gerät verlangt.",
    ),
    "password_missing": (
        "Enter a password, or leave the field empty and use the random password button.",
        "Geben Sie ein Passwort ein, oder lassen Sie das Feld leer und wählen Sie das "
        "zufällige Passwort.",
    ),
    "password_not_expected": (
        "A random password is generated: leave the password field empty.",
        "Ein zufälliges Passwort wird erzeugt: Lassen Sie das Passwortfeld leer.",
    ),
    "password_mismatch": (
        "The two new passwords differ.",
        "Die beiden neuen Passwörter unterscheiden sich.",
    ),
    "auth_backend_external": (
        "This user signs in through an external directory; the password is managed there.",
        "Dieser Benutzer meldet sich über einen externen Verzeichnisdienst an; das Passwort "
        "wird dort verwaltet.",
    ),
    "email_missing": ("The user has no email address.", "Der Benutzer hat keine E-Mail-Adresse."),
    "email_invalid": ("The email address is not valid.", "Die E-Mail-Adresse ist ungültig."),
    "mail_failed": (
        "The mail server did not accept the message; nothing was changed.",
        "Der Mailserver hat die Nachricht nicht angenommen; es wurde nichts geändert.",
    ),
    "mail_not_configured": (
        "No mail server is configured.",
        "Es ist kein Mailserver eingerichtet.",
    ),
    "invalid_credentials": (
        "Username or password is wrong.",
        "Benutzername oder Passwort ist falsch.",
    ),
    "login_rate_limited": (
        "Too many failed sign-ins for this account; try again in {seconds} seconds.",
        "Zu viele fehlgeschlagene Anmeldungen für dieses Konto; versuchen Sie es in "
        "{seconds} Sekunden erneut.",
    ),
    "directory_unavailable": (
        "The directory cannot be reached; please try again shortly.",
        "Das Verzeichnis ist nicht erreichbar; bitte versuchen Sie es gleich noch einmal.",
    ),
    "field_from_directory": (
        "This field comes from the directory; change it there.",
        "Dieses Feld stammt aus dem Verzeichnis; ändern Sie es dort.",
    ),
    "saml_invalid": (
        "The identity provider's answer was not accepted. Sign in again.",
        "Die Antwort des Identitätsanbieters wurde nicht angenommen. Melden Sie sich erneut an.",
    ),
    "saml_invalid.expired": (
        "The sign-in took too long and has expired. Sign in again.",
        "Die Anmeldung hat zu lange gedauert und ist abgelaufen. Melden Sie sich erneut an.",
    ),
    "saml_invalid.replayed": (
        "This sign-in was used already. Sign in again.",
        "Diese Anmeldung wurde bereits verwendet. Melden Sie sich erneut an.",
    ),
    "saml_invalid.unsolicited": (
        "This sign-in was not started here or has expired. Sign in again.",
        "Diese Anmeldung wurde nicht hier begonnen oder ist abgelaufen. Melden Sie sich erneut an.",
    ),
    "saml_user_unknown": (
        "There is no user of this name here; ask an administrator to add you.",
        "Hier gibt es keinen Benutzer dieses Namens; bitten Sie einen Administrator, Sie "
        "anzulegen.",
    ),
    "auth_backend_mismatch": (
        "This account does not sign in with single sign-on.",
        "Dieses Konto meldet sich nicht per Single Sign-on an.",
    ),
    "user_created_meanwhile": (
        "The user was created meanwhile; sign in again.",
        "Der Benutzer wurde zwischenzeitlich angelegt; melden Sie sich erneut an.",
    ),
    "saml_not_configured": (
        "Single sign-on is not configured.",
        "Single Sign-on ist nicht eingerichtet.",
    ),
    "user_disabled": (
        "This account is disabled; ask an administrator.",
        "Dieses Konto ist deaktiviert; wenden Sie sich an einen Administrator.",
    ),
    "cannot_disable_self": (
        "You cannot disable your own account.",
        "Sie können Ihr eigenes Konto nicht deaktivieren.",
    ),
    "password_changed_meanwhile": (
        "The password changed meanwhile; please try again.",
        "Das Passwort wurde zwischenzeitlich geändert; bitte versuchen Sie es erneut.",
    ),
    "current_password_missing": (
        "Enter your current password.",
        "Geben Sie Ihr aktuelles Passwort ein.",
    ),
    "current_password_wrong": (
        "The current password is wrong.",
        "Das aktuelle Passwort ist falsch.",
    ),
    "user_not_found": ("There is no such user.", "Diesen Benutzer gibt es nicht."),
    "device_not_found": ("There is no such device.", "Dieses Gerät gibt es nicht."),
    "mac_invalid": ("This is not a valid MAC address.", "Das ist keine gültige MAC-Adresse."),
    "username_invalid": (
        "A username is 1–64 lower-case letters, digits and . _ @ -, starting with a letter or "
        "digit.",
        "Ein Benutzername hat 1–64 Kleinbuchstaben, Ziffern und . _ @ - und beginnt mit einem "
        "Buchstaben oder einer Ziffer.",
    ),
    "username_taken": (
        "A user with this username exists.",
        "Es gibt bereits einen Benutzer mit diesem Benutzernamen.",
    ),
    "display_name_invalid": (
        "A name has 1–128 characters.",
        "Ein Name hat 1–128 Zeichen.",
    ),
    "extension_invalid": (
        "An extension is 1–15 digits.",
        "Eine Durchwahl hat 1–15 Ziffern.",
    ),
    "extension_taken": (
        "Another user has this extension.",
        "Ein anderer Benutzer hat diese Durchwahl.",
    ),
    "auth_backend_invalid": ("Choose a sign-in method.", "Wählen Sie eine Anmeldemethode."),
    "language_invalid": ("Choose a language.", "Wählen Sie eine Sprache."),
    "role_invalid": ("Choose a role.", "Wählen Sie eine Rolle."),
    "impersonate_self": (
        "You cannot impersonate yourself.",
        "Sie können nicht als Sie selbst handeln.",
    ),
    "already_impersonating": (
        "Go back to your own account before you impersonate someone else.",
        "Kehren Sie zu Ihrem eigenen Konto zurück, bevor Sie als jemand anderes handeln.",
    ),
    "forbidden": ("This needs an administrator.", "Dafür sind Administratorrechte nötig."),
    "since_invalid": (
        "Enter a date such as 2026-01-31.",
        "Geben Sie ein Datum wie 2026-01-31 ein.",
    ),
}
