import CtdHost

CtdCommand.main()
