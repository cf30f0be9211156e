import Foundation

// MARK: - Tree building

/// Receives the parser's events (libxml2's SAX2, through CXML) and builds the values. One per parse; never shared
/// between threads. A fault of ours stops the parse: every event handler returns whether the parser must stop.
final class TreeBuilder {
    package enum Kind {
        case methodCall, methodName, params, param
        case methodResponse, fault
        case value, array, data, structure, member, name
        case scalar(Scalar)
    }

    package enum Scalar {
        case int32, int64, boolean, string, double, dateTime, base64, nilValue
    }

    package struct Frame {
        var kind: Kind
        var tag: String
        var text = ""
        /// Values of child `<value>` elements (for param, fault, data), or the typed value of a `<value>`.
        var values: [XMLRPCValue] = []
        var members = XMLRPCStruct()
        var memberName: String?
        /// `Seen` bits of the children met so far.
        var seen: UInt8 = 0
        /// The type element of a `<value>`, for messages.
        var typeTag: String?
    }

    package enum Seen {
        static let methodName: UInt8 = 1
        static let params: UInt8 = 2
        static let fault: UInt8 = 4
        static let value: UInt8 = 8
        static let name: UInt8 = 16
        static let data: UInt8 = 32
        static let typed: UInt8 = 64
    }

    package let mode: XMLRPCDecoder.Mode
    package let maxDepth: Int

    private var stack: [Frame] = []
    private var valueDepth = 0

    private(set) var fault: Fault?
    private(set) var parserErrorLine: Int?
    private(set) var rootClosed = false

    private(set) var methodName: String?
    private(set) var params: [XMLRPCValue] = []
    private(set) var responseValue: XMLRPCValue?
    private(set) var responseFault: Fault?

    package init(mode: XMLRPCDecoder.Mode, maxDepth: Int) {
        self.mode = mode
        self.maxDepth = maxDepth
    }

    private var stopped: Bool { fault != nil || parserErrorLine != nil }

    private func fail(_ fault: Fault) {
        guard !stopped else { return }
        self.fault = fault
    }

    private func invalid(_ why: String) {
        fail(mode.invalid(why))
    }

    // MARK: Events

    /// Returns true when the parse must stop (here and in the other handlers).
    package func start(_ elementName: String) -> Bool {
        startElement(elementName)
        return stopped
    }

    package func end(_ elementName: String) -> Bool {
        endElement(elementName)
        return stopped
    }

    package func text(_ text: String) -> Bool {
        addText(text)
        return stopped
    }

    /// A well-formedness error the parser reported on `line`.
    package func parseError(line: Int) {
        guard !stopped else { return }
        parserErrorLine = line
    }

    private func startElement(_ elementName: String) {
        guard !stopped else { return }
        guard let parent = stack.last else {
            if rootClosed {
                invalid("the body holds more than one root element.")
            } else if elementName == mode.rootName {
                stack.append(Frame(kind: mode == .request ? .methodCall : .methodResponse, tag: elementName))
            } else {
                invalid("the root element is <\(Self.quoted(elementName))>, expected <\(mode.rootName)>.")
            }
            return
        }

        // `bit` marks children that may appear once; 0 for repeatable ones.
        let kind: Kind
        let bit: UInt8
        switch (parent.kind, elementName) {
        case (.methodCall, "methodName"): (kind, bit) = (.methodName, Seen.methodName)
        case (.methodCall, "params"): (kind, bit) = (.params, Seen.params)
        case (.methodResponse, "params"): (kind, bit) = (.params, Seen.params)
        case (.methodResponse, "fault"): (kind, bit) = (.fault, Seen.fault)
        case (.params, "param"): (kind, bit) = (.param, 0)
        case (.param, "value"), (.fault, "value"), (.member, "value"): (kind, bit) = (.value, Seen.value)
        case (.data, "value"): (kind, bit) = (.value, 0)
        case (.structure, "member"): (kind, bit) = (.member, 0)
        case (.member, "name"): (kind, bit) = (.name, Seen.name)
        case (.array, "data"): (kind, bit) = (.data, Seen.data)
        case (.value, _):
            guard let typed = Self.typedKind(elementName) else {
                invalid("<\(Self.quoted(elementName))> is not an XML-RPC type.")
                return
            }
            guard parent.seen & Seen.typed == 0 else {
                invalid("a <value> holds more than one type element.")
                return
            }
            (kind, bit) = (typed, Seen.typed)
            stack[stack.count - 1].typeTag = elementName
        default:
            invalid("<\(Self.quoted(elementName))> is not allowed inside <\(parent.tag)>.")
            return
        }

        if case .methodResponse = parent.kind, parent.seen != 0 {
            invalid("<methodResponse> holds more than one of <params> and <fault>.")
            return
        }
        if bit != 0 {
            guard parent.seen & bit == 0 else {
                invalid("<\(parent.tag)> holds more than one <\(elementName)>.")
                return
            }
            stack[stack.count - 1].seen |= bit
        }
        if case .value = kind {
            valueDepth += 1
            if valueDepth > maxDepth {
                fail(Fault.nestingTooDeep(limit: maxDepth))
                return
            }
        }
        stack.append(Frame(kind: kind, tag: elementName))
    }

    private func addText(_ text: String) {
        guard !stopped, let top = stack.last else { return }
        switch top.kind {
        case .methodName, .name, .scalar, .value:
            stack[stack.count - 1].text += text
        default:
            if !Self.isBlank(text) { invalid("text is not allowed inside <\(top.tag)>.") }
        }
    }

    private func endElement(_ elementName: String) {
        guard !stopped, let frame = stack.popLast() else { return }
        let parentIndex = stack.count - 1

        switch frame.kind {
        case .methodCall:
            rootClosed = true
            guard let name = methodName else { return invalid("<methodCall> has no <methodName>.") }
            guard !name.isEmpty else { return invalid("<methodName> is empty.") }

        case .methodResponse:
            rootClosed = true
            if responseValue == nil, responseFault == nil {
                invalid("<methodResponse> holds neither <params> nor <fault>.")
            }

        case .methodName:
            methodName = Self.trimmed(frame.text)

        case .params:
            if mode == .response {
                guard frame.values.count == 1 else {
                    return invalid("<methodResponse> must hold exactly one <param>, not \(frame.values.count).")
                }
                responseValue = frame.values[0]
            } else {
                params = frame.values
            }

        case .param:
            guard let value = frame.values.first else { return invalid("a <param> holds no <value>.") }
            stack[parentIndex].values.append(value)

        case .fault:
            guard let value = frame.values.first else { return invalid("<fault> holds no <value>.") }
            guard let code = value[member: "faultCode"]?.intValue, let intCode = Int(exactly: code) else {
                return invalid("<fault> has no integer faultCode member.")
            }
            let message: String
            switch value[member: "faultString"] {
            case nil: message = ""
            case .string(let s)?: message = s
            default: return invalid("the faultString member of <fault> is not a string.")
            }
            responseFault = Fault(code: intCode, message: message)

        case .value:
            valueDepth -= 1
            let value: XMLRPCValue
            if let typed = frame.values.first {
                guard Self.isBlank(frame.text) else {
                    return invalid("a <value> holds text next to a <\(frame.typeTag ?? "type")>.")
                }
                value = typed
            } else {
                // No type element: the text itself is a string, kept exactly as sent.
                value = .string(frame.text)
            }
            stack[parentIndex].values.append(value)

        case .scalar(let scalar):
            switch Self.decodeScalar(scalar, tag: frame.tag, text: frame.text) {
            case .success(let value):
                stack[parentIndex].values.append(value)
            case .failure(let why):
                invalid(why.message)
            }

        case .array:
            guard let data = frame.values.first else { return invalid("an <array> holds no <data>.") }
            stack[parentIndex].values.append(data)

        case .data:
            stack[parentIndex].values.append(.array(frame.values))

        case .structure:
            stack[parentIndex].values.append(.structure(frame.members))

        case .member:
            guard let name = frame.memberName else { return invalid("a struct <member> has no <name>.") }
            guard let value = frame.values.first else {
                return invalid("struct member '\(Self.quoted(name))' has no <value>.")
            }
            // A repeated name: the last value wins.
            stack[parentIndex].members[name] = value

        case .name:
            stack[parentIndex].memberName = frame.text
        }
    }


    // MARK: Scalars

    private static func typedKind(_ tag: String) -> Kind? {
        switch tag {
        case "int", "i4": return .scalar(.int32)
        case "i8", "ex:i8": return .scalar(.int64)
        case "boolean": return .scalar(.boolean)
        case "string": return .scalar(.string)
        case "double": return .scalar(.double)
        case "dateTime.iso8601": return .scalar(.dateTime)
        case "base64": return .scalar(.base64)
        case "nil", "ex:nil": return .scalar(.nilValue)
        case "array": return .array
        case "struct": return .structure
        default: return nil
        }
    }

    package struct Problem: Error {
        var message: String
    }

    package static func decodeScalar(_ scalar: Scalar, tag: String, text: String) -> Result<XMLRPCValue, Problem> {
        if case .string = scalar { return .success(.string(text)) }
        let t = trimmed(text)
        switch scalar {
        case .string:
            return .success(.string(text))

        case .int32, .int64:
            guard isInteger(t) else {
                return .failure(Problem(message: "<\(tag)> holds '\(quoted(t))', not an integer."))
            }
            guard let v = Int64(t) else {
                return .failure(Problem(message: "<\(tag)> value \(quoted(t)) is outside the 64-bit range."))
            }
            // Some clients send unsigned 32-bit numbers in <int>; accept them rather than fail.
            if case .int32 = scalar, v < Int64(Int32.min) || v > Int64(UInt32.max) {
                return .failure(Problem(message: "<\(tag)> value \(t) is outside the 32-bit range; use <i8>."))
            }
            return .success(.int(v))

        case .boolean:
            switch t.lowercased() {
            case "1", "true": return .success(.bool(true))
            case "0", "false": return .success(.bool(false))
            default: return .failure(Problem(message: "<boolean> holds '\(quoted(t))', not 0 or 1."))
            }

        case .double:
            guard isDecimal(t), let v = Double(t) else {
                return .failure(Problem(message: "<double> holds '\(quoted(t))', not a number."))
            }
            guard v.isFinite else {
                return .failure(Problem(message: "<double> value \(quoted(t)) is outside the double range."))
            }
            return .success(.double(v))

        case .dateTime:
            guard !t.isEmpty else { return .failure(Problem(message: "<dateTime.iso8601> is empty.")) }
            return .success(.dateTime(t))

        case .base64:
            guard let bytes = Base64.decode(t) else {
                return .failure(Problem(message: "<base64> does not hold valid base64."))
            }
            return .success(.base64(bytes))

        case .nilValue:
            guard t.isEmpty else { return .failure(Problem(message: "<\(tag)> must be empty.")) }
            return .success(.nil)
        }
    }

    /// Optional sign, then ASCII digits.
    private static func isInteger(_ s: String) -> Bool {
        var digits = 0
        for (i, b) in s.utf8.enumerated() {
            if i == 0, b == UInt8(ascii: "+") || b == UInt8(ascii: "-") { continue }
            guard b >= UInt8(ascii: "0"), b <= UInt8(ascii: "9") else { return false }
            digits += 1
        }
        return digits > 0
    }

    /// Sign, digits, point, exponent: what `Double.init` may then read. Excludes "inf", "nan" and hex floats.
    private static func isDecimal(_ s: String) -> Bool {
        var digits = 0
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digits += 1
            case UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "e"), UInt8(ascii: "E"): break
            default: return false
            }
        }
        return digits > 0
    }

    package static func isBlank(_ s: String) -> Bool {
        s.utf8.allSatisfy(XMLRPCDecoder.isXMLSpace)
    }

    package static func trimmed(_ s: String) -> String {
        let u = s.utf8
        guard let first = u.firstIndex(where: { !XMLRPCDecoder.isXMLSpace($0) }) else { return "" }
        let last = u.lastIndex(where: { !XMLRPCDecoder.isXMLSpace($0) })!
        if first == u.startIndex, last == u.index(before: u.endIndex) { return s }
        return String(s[first...last])
    }

    /// Client text echoed in a fault message, cut short so that a fault never carries a large part of the body.
    package static func quoted(_ s: String) -> String {
        s.count <= 40 ? s : String(s.prefix(40)) + "…"
    }
}
