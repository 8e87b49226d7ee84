"""provisioner: phone-provisioning integration service for PBX operators."""
