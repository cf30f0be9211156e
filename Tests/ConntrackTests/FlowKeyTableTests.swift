import Foundation
import Testing

@testable import Conntrack

/// The mirror's FlowKey -> index hash table against a Dictionary, under the mirror's own operations: append,
/// remove with the swap of the last entry into the hole, lookups of present and absent keys.
struct FlowKeyTableTests {
    @Test func randomAppendsAndSwapRemoves_matchADictionary() {
        var g = SystemRandomNumberGenerator()
        var flows: [Flow] = []
        var table = FlowKeyTable()
        var reference: [FlowKey: Int] = [:]
        func keyAt(_ i: Int) -> FlowKey { FlowKey(flows[i]) }
        for step in 0..<60_000 {
            if flows.isEmpty || Int.random(in: 0..<5, using: &g) < 3 {
                // Few distinct ids and addresses, so that keys collide on everything but one field.
                let f = Flow(
                    id: UInt32.random(in: 0..<50, using: &g), l4proto: 17,
                    origSource: IPAddress(ipv4: UInt32.random(in: 0..<40, using: &g)),
                    origSourcePort: UInt16.random(in: 0..<200, using: &g))
                let key = FlowKey(f)
                guard reference[key] == nil else { continue }
                flows.append(f)
                reference[key] = flows.count - 1
                table.insert(key, index: flows.count - 1, keyAt)
            } else {
                let i = Int.random(in: 0..<flows.count, using: &g)
                let key = FlowKey(flows[i])
                #expect(table.find(key, keyAt) == i)
                table.remove(key, index: i, keyAt)
                reference[key] = nil
                let last = flows.count - 1
                if i != last {
                    let moved = FlowKey(flows[last])
                    table.move(moved, from: last, to: i)
                    reference[moved] = i
                    flows[i] = flows[last]
                }
                flows.removeLast()
            }
            if step % 5000 == 0 || step == 59_999 {
                #expect(table.count == reference.count)
                for (key, i) in reference { #expect(table.find(key, keyAt) == i) }
                let absent = FlowKey(Flow(id: 999, origSource: IPAddress(ipv4: 7)))
                #expect(table.find(absent, keyAt) == nil)
            }
        }
    }
}
