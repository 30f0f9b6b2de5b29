"""Everything about bytes that leave a machine: IPFS daemon and client, payload format, codecs, CIDs."""
