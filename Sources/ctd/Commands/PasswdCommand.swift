import ArgumentParser
import Foundation
import PasswordFile

/// `ctd passwd add|remove|list`: manages AuthSHA's password file. Passwords come from the terminal (without echo)
/// or from standard input, never from the command line, where `ps` and shell history would show them.
struct PasswdCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "passwd", abstract: "Manage an AuthSHA password file.",
        subcommands: [Add.self, Remove.self, List.self])

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add a user or replace their password (asked twice on a terminal; else the first line of stdin).")
        @Argument(help: "User name.") var user: String
        @Option(name: .long, help: "Password file (created with mode 0600 if missing).") var file: String
        @Option(name: .long, help: "yescrypt (default) or sha512-crypt.") var scheme: String = "yescrypt"
        @Flag(
            name: .long,
            help: "Read the password from the first line of standard input (also done when stdin is not a terminal).")
        var stdin = false

        func run() throws {
            guard let s = NewPasswordScheme(rawValue: scheme) else {
                throw ValidationError("--scheme must be yescrypt or sha512-crypt")
            }
            let password: String
            if stdin || isatty(0) == 0 {
                guard let line = readLine(strippingNewline: true) else {
                    throw ValidationError("no password on standard input")
                }
                password = line
            } else {
                let first = try Terminal.readSecret("Password for \(user): ")
                let second = try Terminal.readSecret("Again: ")
                guard first == second else { throw ValidationError("the passwords differ; nothing was changed") }
                password = first
            }
            guard !password.isEmpty else { throw ValidationError("an empty password is not allowed") }
            do {
                let change = try PasswordFileEditor.addOrReplace(user: user, password: password, scheme: s, path: file)
                print("\(change.rawValue) \(user) in \(file)")
            } catch let e as PasswordFileError {
                throw ValidationError(e.description)
            }
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a user.")
        @Argument(help: "User name.") var user: String
        @Option(name: .long, help: "Password file.") var file: String

        func run() throws {
            do {
                if try PasswordFileEditor.remove(user: user, path: file) {
                    print("removed \(user) from \(file)")
                } else {
                    print("\(user) is not in \(file)")
                    throw ExitCode(1)
                }
            } catch let e as PasswordFileError {
                throw ValidationError(e.description)
            }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List users and the scheme of their hash.")
        @Argument(help: "Only this user.") var user: String?
        @Option(name: .long, help: "Password file.") var file: String

        func run() throws {
            do {
                for e in try PasswordFileEditor.list(path: file) where user == nil || e.user == user {
                    print("\(e.user)\t\(e.scheme.name)\(e.scheme.isLegacy ? "\t(legacy: unsalted, replace it)" : "")")
                }
            } catch let e as PasswordFileError {
                throw ValidationError(e.description)
            }
        }
    }
}

enum Terminal {
    /// Reads a line from /dev/tty with echo off.
    static func readSecret(_ prompt: String) throws -> String {
        let fd = open("/dev/tty", O_RDWR)
        guard fd >= 0 else { throw ValidationError("no terminal; pass --stdin and pipe the password") }
        defer { close(fd) }
        var old = termios()
        tcgetattr(fd, &old)
        var quiet = old
        quiet.c_lflag &= ~tcflag_t(ECHO)
        tcsetattr(fd, TCSAFLUSH, &quiet)
        defer {
            tcsetattr(fd, TCSAFLUSH, &old)
            _ = write(fd, "\n", 1)
        }
        _ = prompt.withCString { write(fd, $0, strlen($0)) }
        var bytes: [UInt8] = []
        var c: UInt8 = 0
        while read(fd, &c, 1) == 1, c != 10, c != 13 { bytes.append(c) }
        return String(decoding: bytes, as: UTF8.self)
    }
}
