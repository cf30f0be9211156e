await CtdCommand.main()
