/// A query that cannot run: an unknown filter or order key, a value of the wrong form, a page out of range.
///
/// `message` is one sentence naming the key and the value, meant for the person who wrote the query.
public struct FlowQueryError: Error, Equatable, Sendable, CustomStringConvertible {
    public var message: String

    public init(_ message: String) { self.message = message }

    public var description: String { message }
}
