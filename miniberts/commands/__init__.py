"""One module per `miniberts` command: HELP, add_arguments(parser), run(args)."""
