-- The PBX side: digest credentials of every line account for the registrar (never the clear
-- password), the realm they are made for, and read-only views a PBX role may use.

-- The SIP realm (digest realm, and the domain a registrar files the account under) of a site's
-- line accounts; NULL: the registrar host.
ALTER TABLE sites ADD COLUMN sip_realm text;

-- HA1 = MD5(username:realm:password) and HA1b = MD5(username@realm:realm:password) of the line's
-- account, for sip_realm; written in the transaction that renders the device's config.
ALTER TABLE device_assignments
    ADD COLUMN sip_realm text,
    ADD COLUMN sip_ha1 text CHECK (sip_ha1 ~ '^[0-9a-f]{32}$'),
    ADD COLUMN sip_ha1b text CHECK (sip_ha1b ~ '^[0-9a-f]{32}$');

CREATE SCHEMA pbx;
COMMENT ON SCHEMA pbx IS 'Read-only views for the PBX (provisioner pbx grant ROLE).';

-- Kamailio / OpenSIPS auth_db: auth_check("$fd", "subscriber", "1") with the stock column names.
CREATE VIEW pbx.subscriber AS
    SELECT a.sip_auth_user AS username, a.sip_realm AS domain, a.sip_ha1 AS ha1,
           a.sip_ha1b AS ha1b
    FROM device_assignments a
    WHERE a.sip_ha1 IS NOT NULL AND a.sip_auth_user <> '';

-- Which SIP accounts carry an extension right now (hot desking moves users between devices).
CREATE VIEW pbx.extension_accounts AS
    SELECT u.extension, a.sip_user AS username, a.sip_realm AS domain, a.mac, a.slot,
           a.hotdesk, d.sip_contact AS contact
    FROM device_assignments a
    JOIN users u ON u.id = a.user_id
    JOIN devices d ON d.mac = a.mac
    WHERE a.sip_ha1 IS NOT NULL AND u.extension IS NOT NULL;

-- Asterisk PJSIP realtime (res_config_pgsql + sorcery), the columns of Asterisk's realtime schema
-- that an endpoint of a provisioned phone needs; every other column is NULL (Asterisk's default).
CREATE VIEW pbx.ps_endpoints AS
    SELECT a.sip_user AS id, a.sip_user AS aors, a.sip_auth_user AS auth,
           'provisioner-phones'::text AS context, 'all'::text AS disallow,
           'ulaw,alaw,g722,opus'::text AS allow,
           format('"%s" <%s>', replace(u.display_name, '"', ''), u.extension) AS callerid,
           'no'::text AS direct_media, 'rfc4733'::text AS dtmf_mode
    FROM device_assignments a JOIN users u ON u.id = a.user_id
    WHERE a.sip_ha1 IS NOT NULL;

CREATE VIEW pbx.ps_auths AS
    SELECT a.sip_auth_user AS id, 'md5'::text AS auth_type, a.sip_auth_user AS username,
           a.sip_ha1 AS md5_cred, a.sip_realm AS realm
    FROM device_assignments a
    WHERE a.sip_ha1 IS NOT NULL;

CREATE VIEW pbx.ps_aors AS
    SELECT a.sip_user AS id, 1 AS max_contacts, 'yes'::text AS remove_existing,
           60 AS qualify_frequency
    FROM device_assignments a
    WHERE a.sip_ha1 IS NOT NULL;

-- A hot-desk login takes slot 1 of the phone; the line it displaces waits here (the whole row,
-- its SIP account and password kept) and comes back when the hot-desk user logs out. Parked
-- lines are in no pbx view: their account does not register while someone else uses the phone.
CREATE TABLE parked_assignments (
    mac                   text NOT NULL REFERENCES devices (mac) ON DELETE CASCADE,
    slot                  integer NOT NULL,
    assignment            jsonb NOT NULL,
    parked_at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (mac, slot)
);
