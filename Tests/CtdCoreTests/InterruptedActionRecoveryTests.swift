import CtdPluginAPI
import Testing

@testable import CtdCore

// The sentence an interrupted action gets from what the kernel table shows at restart.

private let before = ConnectionInfo(
    id: 7, l3proto: "ipv4", l4proto: 6, origSource: "10.0.0.1", origDestination: "10.0.0.2", origSourcePort: 1,
    origDestinationPort: 2, replySource: "10.0.0.2", replyDestination: "10.0.0.1", replySourcePort: 2,
    replyDestinationPort: 1, mark: 5, timeout: 100, status: 0, zone: 0)

private func event(_ kind: ActionKind, field: String? = nil, value: String? = nil) -> ActionEvent {
    ActionEvent(
        kind: kind, procedure: kind.rawValue, user: "u", roles: [.operator], clientAddress: "127.0.0.1",
        connection: before, field: field, newValue: value)
}

@Test func reason_forAKill_saysWhetherTheConnectionIsStillThere() {
    #expect(
        InterruptedActionRecovery.reason(event(.kill), current: before)
            == "the connection is still in the kernel table at restart: the kill did not reach it")
    #expect(InterruptedActionRecovery.reason(event(.kill), current: nil).hasPrefix("the connection is gone"))
}

@Test func reason_forAMarkChange_comparesTheMarkWithTheRequestedAndTheOldValue() {
    var now = before
    now.mark = 9
    #expect(InterruptedActionRecovery.reason(event(.change, field: "mark", value: "9"), current: now)
        == "at restart the connection has mark 9, the requested value: the change reached it")
    #expect(InterruptedActionRecovery.reason(event(.change, field: "mark", value: "9"), current: before)
        == "at restart the connection has mark 5, not the requested 9: the change did not reach it")
    #expect(InterruptedActionRecovery.reason(event(.change, field: "timeout", value: "60"), current: before)
        .contains("cannot be told"))
}

@Test func reason_forALogin_hasNoKernelStateToCheck() {
    let login = ActionEvent(kind: .login, procedure: "login", user: "u", roles: [], clientAddress: "127.0.0.1")
    #expect(InterruptedActionRecovery.reason(login, current: nil) == "stopped before the outcome was recorded (no kernel state to check)")
}
