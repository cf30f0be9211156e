/// Identity of a kernel entry: the id alone can collide (a random 32-bit value; about 7 pairs in 250,000 entries),
/// so the mirror keys entries by id and original tuple.
public struct FlowKey: Hashable, Sendable {
    package var id: UInt32
    package var source: IPAddress
    package var destination: IPAddress
    package var sourcePort: UInt16
    package var destinationPort: UInt16
    package var l4proto: UInt8
    package var zone: UInt16

    package init(_ f: Flow) {
        id = f.id
        source = f.origSource
        destination = f.origDestination
        sourcePort = f.l4proto == 1 || f.l4proto == 58 ? f.icmpID : f.origSourcePort
        destinationPort = f.origDestinationPort
        l4proto = f.l4proto
        zone = f.zone
    }
}
