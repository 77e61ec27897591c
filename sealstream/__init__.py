"""sealstream."""
