"""The example project's configuration."""
