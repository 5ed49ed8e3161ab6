"""The Ethereum example: payments on a local Ganache node tracked until N confirmations (README.md)."""
