import ArgumentParser

// Parsed and run by hand: `serve` is asynchronous (a service group), the other commands are not, and an existential
// `run()` would pick the synchronous requirement.
do {
    var command = try CtdCommand.parseAsRoot()
    if let serve = command as? ServeCommand {
        try await serve.serve()
    } else {
        try command.run()
    }
} catch {
    CtdCommand.exit(withError: error)
}
