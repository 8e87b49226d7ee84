-- Directory users (issue 11): the DN of the entry a user of backend 'ldap' was last synced from,
-- shown on the user's page; listing users by backend (the sync reads every 'ldap' user) is
-- indexed.
ALTER TABLE users ADD COLUMN directory_dn text;
CREATE INDEX users_auth_backend_idx ON users (auth_backend);
