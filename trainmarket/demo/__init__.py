"""`make demo`: a whole local testnet with honest and adversarial trainers, and a report of who got paid."""
