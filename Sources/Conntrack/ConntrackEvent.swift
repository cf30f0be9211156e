/// One message from the kernel about one entry, as the mirror applies it.
public struct ConntrackEvent: Sendable {
    public enum Kind: Sendable, Equatable {
        /// A dump listed the entry (every field present).
        case listed
        case new
        case update
        case destroy
    }

    /// Which of the entry's changeable fields the message carried; the others keep their last known values.
    public struct Fields: OptionSet, Sendable {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        public static let counters = Fields(rawValue: 1 << 0)
        public static let mark = Fields(rawValue: 1 << 1)
        public static let timeout = Fields(rawValue: 1 << 2)
        public static let status = Fields(rawValue: 1 << 3)
        public static let state = Fields(rawValue: 1 << 4)
        /// The start time (only dumps carry it: the kernel sends CTA_TIMESTAMP in DESTROY events alone).
        public static let start = Fields(rawValue: 1 << 5)
        public static let labels = Fields(rawValue: 1 << 6)
        public static let helper = Fields(rawValue: 1 << 7)
        public static let all: Fields = [.counters, .mark, .timeout, .status, .state, .start, .labels, .helper]
    }

    public var kind: Kind
    public var fields: Fields
    public var flow: Flow

    public init(kind: Kind, fields: Fields, flow: Flow) {
        self.kind = kind
        self.fields = fields
        self.flow = flow
    }
}
