"""Chain side: Solidity sources, compiled artifacts, compile step, Anvil manager, deployment, typed client."""
