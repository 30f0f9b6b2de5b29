"""Storage: the IPFS daemon manager, the verified client and CIDs."""
