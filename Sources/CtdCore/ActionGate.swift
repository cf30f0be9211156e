import Foundation

/// Lets writes (kill, change) in until shutdown closes it, and lets shutdown wait for the writes inside.
///
/// A write enters before it touches the kernel and leaves after its audit records are written, so a shutdown
/// that closes the gate and waits for it never cuts a write between the kernel and the audit trail: a write either
/// runs whole or is refused before anything happened.
public final class ActionGate: @unchecked Sendable {
    private let condition = NSCondition()
    private var open = true
    private var inside = 0

    public init() {}

    /// Runs `body` inside the gate, or returns `nil` without running it when the gate is closed.
    func pass<T>(_ body: () throws -> T) rethrows -> T? {
        condition.lock()
        guard open else {
            condition.unlock()
            return nil
        }
        inside += 1
        condition.unlock()
        defer {
            condition.lock()
            inside -= 1
            condition.broadcast()
            condition.unlock()
        }
        return try body()
    }

    /// Refuses new writes and returns once every write inside has finished.
    public func closeAndWait() {
        condition.lock()
        open = false
        while inside > 0 { condition.wait() }
        condition.unlock()
    }

    /// Whether new writes are let in.
    public var isOpen: Bool {
        condition.lock()
        defer { condition.unlock() }
        return open
    }

    /// Writes running now.
    public var running: Int {
        condition.lock()
        defer { condition.unlock() }
        return inside
    }
}
