import Conntrack
import Foundation
import XMLRPC

extension Procedure {
    static let change = Procedure(
        name: "change", params: ["session", "field_name", "id", "value"], required: 4, role: .operator,
        signatures: [
            ["struct", "string", "string", "string", "int"], ["struct", "string", "string", "string", "string"],
        ],
        help:
            "change(session, field_name, id, value) -> the connection after the change. field_name is 'mark' (0..4294967295) or 'timeout' (seconds, 1..2147483647). Needs the operator role.",
        run: { try .value(Change.run($0)) })
}

/// `change(session, field, id, value)`: sets the mark or the timeout of exactly the entry with this id.
enum Change {
    static func run(_ call: Call) throws -> XMLRPCValue {
        let p = call.params
        let field = try p.string(1)
        guard let idValue = p[2], let id = UInt32Argument.parse(idValue) else {
            throw Fault.invalidParams("argument 3 of change (id) is not a connection id")
        }
        guard let raw = p[3] else { throw Fault.invalidParams("change needs its argument value") }
        var mark: UInt32?
        var timeout: UInt32?
        switch field {
        case "mark": mark = try self.mark(raw)
        case "timeout": timeout = try self.timeout(raw)
        default:
            throw Fault.invalidParams("change can set 'mark' or 'timeout', not '\(String(field.prefix(40)))'")
        }
        guard let answer = try call.context.actions.pass({ try change(id, field, mark, timeout, call) }) else {
            throw Fault.shuttingDown
        }
        return answer
    }

    private static func mark(_ raw: XMLRPCValue) throws -> UInt32 {
        guard let m = UInt32Argument.parse(raw) else {
            guard isNumber(raw) else {
                throw Fault.invalidParams("mark must be a number (0 to 4294967295), not \(raw.typeName)")
            }
            throw Fault.valueOutOfRange("mark must be an unsigned 32-bit number (0 to 4294967295)")
        }
        return m
    }

    private static func timeout(_ raw: XMLRPCValue) throws -> UInt32 {
        let t: Int64?
        switch raw {
        case .int(let n): t = n
        case .string(let str): t = Int64(str.trimmingCharacters(in: .whitespaces))
        case .double(let d) where d == d.rounded() && abs(d) < 1e12: t = Int64(d)
        default: t = nil
        }
        guard let t, t >= 1, t <= Int64(Int32.max) else {
            guard isNumber(raw) else {
                throw Fault.invalidParams("timeout must be a number of seconds, not \(raw.typeName)")
            }
            throw Fault.valueOutOfRange("timeout must be a whole number of seconds from 1 to 2147483647")
        }
        return UInt32(t)
    }

    private static func change(_ id: UInt32, _ field: String, _ mark: UInt32?, _ timeout: UInt32?, _ call: Call)
        throws -> XMLRPCValue
    {
        let context = call.context
        let flow: Flow
        switch context.table.lookup(id: id) {
        case .found(let f) where Scoping.allows(call.user, f, context): flow = f
        case .found: throw Fault.noSuchConnection("id \(id) does not exist (any more)")
        case .missing: throw Fault.noSuchConnection("id \(id) does not exist (any more)")
        case .ambiguous:
            throw Fault.noSuchConnection("id \(id) is shared by several entries right now; nothing was changed")
        }
        // A scoped user's connections are theirs by the uid in the mark: a new mark must keep them theirs.
        if let mark, call.user.identity.scope == .own {
            var probe = flow
            probe.mark = mark
            guard Scoping.allows(call.user, probe, context) else {
                throw Fault.permissionDenied("a user scoped to their own connections may only set a mark that keeps the connection theirs")
            }
        }
        let newValue = mark.map { String($0) } ?? timeout.map { String($0) } ?? ""
        let tokens = try context.hooks.before(
            call.event(
                .change, connection: flow.connectionInfo(now: context.clock.now()), field: field, newValue: newValue))
        let outcome: ConntrackTable.WriteOutcome
        let after: Flow?
        do {
            (outcome, after) = try context.table.update(flow, mark: mark, timeout: timeout)
        } catch {
            context.hooks.after(tokens, outcome: .failed(reason: "\(error)"))
            throw Fault.kernelRefused("\(error)")
        }
        switch outcome {
        case .done:
            context.hooks.after(tokens, outcome: .succeeded)
            context.logger.info(
                "change \(field)=\(newValue) on \(id) by \(call.user.identity.user) from \(call.client)")
            let shown = after ?? flow
            return shown.xmlrpcStruct(
                now: context.clock.now(), labelNames: context.settings.labelNames,
                extra: context.resolvedFields.members(mark: shown.mark))
        case .gone:
            context.hooks.after(tokens, outcome: .failed(reason: "no such connection"))
            throw Fault.noSuchConnection("id \(id) does not exist (any more)")
        case .failed(let why):
            context.hooks.after(tokens, outcome: .failed(reason: why))
            context.logger.warning("change on \(id) failed: \(why)")
            throw Fault.kernelRefused(why)
        }
    }

    /// A number in any form `change` reads (int, double, decimal or 0x text): a bad one is out of range (fault 5),
    /// anything else the wrong type (-32602).
    static func isNumber(_ v: XMLRPCValue) -> Bool {
        switch v {
        case .int, .double: return true
        case .string(let text):
            let t = text.trimmingCharacters(in: .whitespaces)
            guard t.hasPrefix("0x") || t.hasPrefix("0X") else { return Double(t) != nil }
            let digits = t.dropFirst(2)
            return !digits.isEmpty && digits.allSatisfy(\.isHexDigit)
        default: return false
        }
    }
}
