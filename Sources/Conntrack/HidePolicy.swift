/// Connections ctd never shows nor touches (pyctd 0.4.2's "filtering of unwanted connections").
public struct HidePolicy: Sendable {
    /// A TCP endpoint of ctd's own listener: an address of this host and the port ctd listens on.
    public struct Endpoint: Hashable, Sendable {
        public var address: IPAddress
        public var port: UInt16
        public init(address: IPAddress, port: UInt16) {
            self.address = address
            self.port = port
        }
    }

    /// An entry is hidden when its original source or destination is in one of these blocks.
    public var blocks: [CIDRBlock]
    /// ctd's own listening endpoints: client connections to ctd are hidden, and only those (a gateway must still see
    /// and kill traffic to the same port on other hosts).
    public var ownEndpoints: Set<Endpoint>

    public init(blocks: [CIDRBlock] = [], ownEndpoints: Set<Endpoint> = []) {
        self.blocks = blocks
        self.ownEndpoints = ownEndpoints
    }

    public static let defaultBlocks = ["127.0.0.0/8", "::1/128"]

    @inline(__always)
    public func hides(_ flow: Flow) -> Bool {
        if flow.l4proto == 6, !ownEndpoints.isEmpty,
            ownEndpoints.contains(Endpoint(address: flow.origDestination, port: flow.origDestinationPort))
        {
            return true
        }
        for block in blocks where block.contains(flow.origSource) || block.contains(flow.origDestination) {
            return true
        }
        return false
    }
}
