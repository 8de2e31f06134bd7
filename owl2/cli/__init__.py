"""The `owl2` command line; each subcommand lives in its own module (see `owl2.cli.main`)."""
