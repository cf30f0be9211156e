import Testing

@testable import ctd

@Suite struct SystemdNotifyTests {
    @Test func statusIsOneLineWithTheFigures() {
        let line = SystemdNotifier.Message.status(entries: 1234, limit: 262144, connections: 3, sessions: 2)
        #expect(line == "STATUS=1234 entries of 262144; 3 client connections, 2 sessions")
        #expect(!line.contains("\n"))
        #expect(
            SystemdNotifier.Message.status(entries: 0, limit: nil, connections: 0, sessions: 0)
                == "STATUS=0 entries; 0 client connections, 0 sessions")
    }

    @Test func statusTextCannotInjectAnotherAssignment() {
        // A newline would start a new assignment (READY=1 sent by a log line); it becomes a space.
        #expect(SystemdNotifier.Message.statusText("reloaded: x\nREADY=1") == "STATUS=reloaded: x READY=1")
    }

    @Test func reloadingCarriesTheMonotonicClock() {
        #expect(SystemdNotifier.Message.reloading(monotonicMicroseconds: 42) == "RELOADING=1\nMONOTONIC_USEC=42")
        #expect(monotonicMicroseconds() > 0)
    }
}
