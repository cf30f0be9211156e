import Foundation
import Logging
import Testing

@testable import ctd

struct LogFormatTests {
    private func event(_ level: Logger.Level, _ message: String, source: String = "Test") -> LogEvent {
        LogEvent(
            level: level, message: "\(message)", metadata: nil, source: source, file: #fileID, function: #function,
            line: #line)
    }

    @Test func priority_followsSdDaemon() {
        #expect(LogFormat.priority(.trace) == 7)
        #expect(LogFormat.priority(.debug) == 7)
        #expect(LogFormat.priority(.info) == 6)
        #expect(LogFormat.priority(.notice) == 5)
        #expect(LogFormat.priority(.warning) == 4)
        #expect(LogFormat.priority(.error) == 3)
        #expect(LogFormat.priority(.critical) == 2)
    }

    @Test func json_whenMessageHasQuotesAndNewlines_staysOneObjectOnOneLine() throws {
        let line = FormattedLogHandler.line(
            event: event(.warning, "a \"quoted\"\nsecond line"), label: "ctd", metadata: ["user": "alice"],
            format: .json, date: Date(timeIntervalSince1970: 0))
        #expect(!line.contains("\n"))
        let object = try #require(
            try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(object["message"] as? String == "a \"quoted\"\nsecond line")
        #expect(object["level"] as? String == "warning")
        #expect(object["timestamp"] as? String == "1970-01-01T00:00:00.000Z")
        #expect((object["metadata"] as? [String: Any])?["user"] as? String == "alice")
    }

    @Test func everyFormat_redactsSecretNamedMetadata() {
        for format in [LogFormat.text, .json, .journal] {
            let line = FormattedLogHandler.line(
                event: event(.info, "x"), label: "ctd",
                metadata: ["password": "hunter2", "Session_ID": "abc123", "nested": ["token": "t0k"]],
                format: format, date: Date())
            #expect(!line.contains("hunter2") && !line.contains("abc123") && !line.contains("t0k"), "\(format): \(line)")
            #expect(line.contains("<redacted>"), "\(format): \(line)")
        }
    }

    @Test func journal_isPrefixedAndOneLine() {
        let line = FormattedLogHandler.line(
            event: event(.error, "broken\nin two"), label: "ctd", metadata: [:], format: .journal, date: Date())
        #expect(line == "<3>ctd: [Test] broken in two")
    }

    @Test func auto_isJournalOnlyWhenJournalStreamNamesTheFile() throws {
        let path = NSTemporaryDirectory() + "ctd-logformat-\(getpid())"
        FileManager.default.createFile(atPath: path, contents: nil)
        defer { unlink(path) }
        let fd = open(path, O_WRONLY)
        defer { close(fd) }
        var st = stat()
        #expect(fstat(fd, &st) == 0)
        let stream = "\(st.st_dev):\(st.st_ino)"
        #expect(LogFormat.auto.resolved(environment: ["JOURNAL_STREAM": stream], fd: fd) == .journal)
        #expect(LogFormat.auto.resolved(environment: ["JOURNAL_STREAM": "\(st.st_dev):\(st.st_ino + 1)"], fd: fd) == .text)
        #expect(LogFormat.auto.resolved(environment: ["JOURNAL_STREAM": "garbage"], fd: fd) == .text)
        #expect(LogFormat.auto.resolved(environment: [:], fd: fd) == .text)
        #expect(LogFormat.json.resolved(environment: ["JOURNAL_STREAM": stream], fd: fd) == .json)
    }

    @Test func parse_whenLogFormatUnknown_fails() {
        #expect(throws: DaemonConfig.Error.self) { try DaemonConfig.parse("[log]\nformat = \"xml\"\n") }
        #expect((try? DaemonConfig.parse("[log]\nformat = \"json\"\n"))?.logFormat == "json")
    }
}
