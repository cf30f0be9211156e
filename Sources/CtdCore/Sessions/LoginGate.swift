import Foundation
import NIOConcurrencyHelpers

#if canImport(Glibc)
    import Glibc
#endif

/// Lets at most `limit` logins into the authenticator at once, and runs them on threads of their own at a lower CPU
/// priority (nice ``nice``), so that logins cannot take the cores from the other calls.
///
/// A login costs the authenticator's time: yescrypt, the default of `ctd passwd`, takes about 40 to 70 ms of CPU per
/// check on this project's 2-core machine, and a password-guessing flood (or many frontends logging in at once)
/// asks for it over and over. On the worker threads, at the priority of `view`, each check took a core's slice
/// from the views; on a nice-10 thread the scheduler gives views about nine tenths of a contended core (CFS
/// weights 1024 against 110), and logins the rest, or everything when the cores are free. The caller's worker
/// waits for the answer without using CPU. docs/design.md, "Logins at a lower priority".
package final class LoginGate: @unchecked Sendable {
    /// The nice value of the login threads.
    package static let defaultNice: Int32 = 10

    private let limit: Int
    private let lock = NIOLock()
    private var inside = 0
    private let lane: LoginLane

    package init(limit: Int, nice: Int32 = LoginGate.defaultNice) {
        self.limit = max(1, limit)
        lane = LoginLane(nice: nice, maxThreads: self.limit)
    }

    /// Runs `body` on a login thread if there is room, else returns nil at once. The caller waits for it.
    package func pass<T>(_ body: () throws -> T) throws -> T? {
        let entered = lock.withLock {
            guard inside < limit else { return false }
            inside += 1
            return true
        }
        guard entered else { return nil }
        defer { lock.withLock { inside -= 1 } }
        return try lane.run(body)
    }
}

/// Threads at a given nice value that run one job each at a time, started as needed (no more than the gate lets in
/// at once) and kept for the process's life.
final class LoginLane: @unchecked Sendable {
    private let nice: Int32
    private let maxThreads: Int
    private let condition = NSCondition()
    private var jobs: [() -> Void] = []
    private var threads = 0
    private var idle = 0

    init(nice: Int32, maxThreads: Int) {
        self.nice = nice
        self.maxThreads = max(1, maxThreads)
    }

    func run<T>(_ body: () throws -> T) throws -> T {
        try withoutActuallyEscaping(body) { body in
            // The job holds `body` and lets go of it before it wakes the caller: nothing keeps the closure once
            // this returns (withoutActuallyEscaping checks that).
            let job = LoginJob<T>(body)
            submit { job.run() }
            return try job.wait().get()
        }
    }

    private func submit(_ job: @escaping () -> Void) {
        condition.lock()
        jobs.append(job)
        // A thread that is finishing a job takes this one next when none is idle and no more may start.
        if idle == 0 && threads < maxThreads {
            threads += 1
            let thread = Thread { [self] in work() }
            thread.name = "ctd-login"
            thread.start()
        } else {
            condition.signal()
        }
        condition.unlock()
    }

    private func work() {
        // On Linux the nice value belongs to the thread: `who` 0 is the calling thread. Raising it needs no
        // privilege; it is never lowered again, so none is needed later either.
        _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, nice)
        condition.lock()
        while true {
            while jobs.isEmpty {
                idle += 1
                condition.wait()
                idle -= 1
            }
            let job = jobs.removeFirst()
            condition.unlock()
            job()
            condition.lock()
        }
    }
}

/// One job: the caller's closure, run on the login thread, and its answer handed back to the waiting caller.
private final class LoginJob<T>: @unchecked Sendable {
    private let condition = NSCondition()
    private var body: (() throws -> T)?
    private var result: Result<T, any Error>?

    init(_ body: @escaping () throws -> T) { self.body = body }

    func run() {
        let r = Result { try body!() }
        body = nil
        condition.lock()
        result = r
        condition.signal()
        condition.unlock()
    }

    func wait() -> Result<T, any Error> {
        condition.lock()
        defer { condition.unlock() }
        while result == nil { condition.wait() }
        return result!
    }
}
