"""One module per subcommand; each exposes a function taking plain keyword arguments."""
