/// Connections ctd never shows nor touches (pyctd 0.4.2's "filtering of unwanted connections").
public struct HidePolicy: Sendable {
    /// An entry is hidden when its original source or destination is in one of these blocks.
    public var blocks: [CIDRBlock]
    /// TCP ports of ctd's own listeners: client connections to ctd are hidden.
    public var ownTCPPorts: Set<UInt16>

    public init(blocks: [CIDRBlock] = [], ownTCPPorts: Set<UInt16> = []) {
        self.blocks = blocks
        self.ownTCPPorts = ownTCPPorts
    }

    public static let defaultBlocks = ["127.0.0.0/8", "::1/128"]

    @inline(__always)
    public func hides(_ flow: Flow) -> Bool {
        if flow.l4proto == 6, !ownTCPPorts.isEmpty, ownTCPPorts.contains(flow.origDestinationPort) { return true }
        for block in blocks where block.contains(flow.origSource) || block.contains(flow.origDestination) {
            return true
        }
        return false
    }
}
