import Foundation

#if canImport(FoundationXML)
    import FoundationXML
#endif

/// A decoded `<methodCall>`.
public struct XMLRPCRequest: Equatable, Sendable {
    public var methodName: String
    public var params: [XMLRPCValue]

    public init(methodName: String, params: [XMLRPCValue] = []) {
        self.methodName = methodName
        self.params = params
    }
}

/// A decoded `<methodResponse>`: the one returned value, or the fault the server sent.
public enum XMLRPCResponse: Equatable, Sendable {
    case value(XMLRPCValue)
    case fault(Fault)
}

/// Turns XML-RPC request and response bodies into values, or throws a `Fault` that can be sent back as is.
///
/// Safety: the body must be UTF-8 (an encoding named in the XML declaration is ignored); bodies containing
/// `<!DOCTYPE` or `<!ENTITY` are refused before parsing, so entity expansion (billion laughs) and external entities
/// (XXE) cannot happen; an element with an attribute (XML-RPC has none) is refused before parsing too, so the
/// parser's pairwise duplicate-attribute check (quadratic in libxml2 2.9) never runs; so are processing
/// instructions other than the XML declaration at the start (FoundationXML crashes on one without data); values may
/// nest at most `maxDepth` levels and parsing stops as soon as a value goes deeper.
/// Every call uses its own parser, so the decoder may be used from any number of threads at once.
///
/// Faults: -32700 (`Fault.parseError`) when the body is not UTF-8 or not well-formed XML (the message gives the line);
/// -32600 (`Fault.invalidRequest`) when it is XML but not XML-RPC (the message names the problem; an attribute is
/// one);
/// -32001 (`Fault.nestingTooDeep`) when values nest too deep.
public enum XMLRPCDecoder {
    /// Levels of `<value>` nesting allowed by default: a scalar parameter is 1 level, an array of scalars is 2.
    public static let defaultMaxDepth = 32

    /// Decodes a `<methodCall>` body.
    public static func decodeRequest(_ body: [UInt8], maxDepth: Int = defaultMaxDepth) throws(Fault) -> XMLRPCRequest {
        let builder = try parse(body, expecting: .request, maxDepth: maxDepth)
        guard let methodName = builder.methodName else {
            throw Fault.invalidRequest("<methodCall> has no <methodName>.")
        }
        return XMLRPCRequest(methodName: methodName, params: builder.params)
    }

    public static func decodeRequest(_ body: Data, maxDepth: Int = defaultMaxDepth) throws(Fault) -> XMLRPCRequest {
        try decodeRequest([UInt8](body), maxDepth: maxDepth)
    }

    /// Decodes a `<methodResponse>` body. A fault sent by the server is returned as `.fault`, not thrown; the
    /// decoder throws only when the body itself is unusable.
    public static func decodeResponse(_ body: [UInt8], maxDepth: Int = defaultMaxDepth) throws(Fault)
        -> XMLRPCResponse
    {
        let builder = try parse(body, expecting: .response, maxDepth: maxDepth)
        if let fault = builder.responseFault { return .fault(fault) }
        guard let value = builder.responseValue else {
            throw Mode.response.invalid("<methodResponse> holds neither <params> nor <fault>.")
        }
        return .value(value)
    }

    public static func decodeResponse(_ body: Data, maxDepth: Int = defaultMaxDepth) throws(Fault) -> XMLRPCResponse {
        try decodeResponse([UInt8](body), maxDepth: maxDepth)
    }

    // MARK: - Parsing

    package enum Mode {
        case request, response

        var rootName: String { self == .request ? "methodCall" : "methodResponse" }

        /// Well-formed XML that is not XML-RPC.
        func invalid(_ why: String) -> Fault {
            switch self {
            case .request: return Fault.invalidRequest(why)
            case .response:
                return Fault(code: Fault.invalidRequest("").code, message: "Invalid XML-RPC response: \(why)")
            }
        }
    }

    private static func parse(_ body: [UInt8], expecting mode: Mode, maxDepth: Int) throws(Fault) -> TreeBuilder {
        let prepared = try prepare(body, mode: mode)
        let parser = XMLParser(data: prepared)
        parser.shouldResolveExternalEntities = false
        parser.shouldProcessNamespaces = false
        parser.shouldReportNamespacePrefixes = false
        let builder = TreeBuilder(mode: mode, maxDepth: max(1, maxDepth))
        parser.delegate = builder
        let finished = parser.parse()
        parser.delegate = nil
        // Whichever came first — a parser error or a fault of ours — stopped the builder; it is the one to report.
        if let line = builder.parserErrorLine { throw malformed(line: line) }
        if let fault = builder.fault { throw fault }
        if !finished { throw malformed(line: parser.lineNumber) }
        guard builder.rootClosed else { throw Fault.parseError("the body holds no XML element.") }
        return builder
    }

    private static func malformed(line: Int) -> Fault {
        Fault.parseError("the body is not well-formed XML (error on line \(max(line, 1))).")
    }

    /// Checks done on the raw bytes before any XML parser sees them, each one pass over the body. Returns the bytes
    /// to parse.
    package static func prepare(_ body: [UInt8], mode: Mode = .request) throws(Fault) -> Data {
        guard isValidUTF8(body) else { throw Fault.parseError("the body is not valid UTF-8.") }

        var sawMarkup = false
        var i = 0
        let n = body.count
        // The one processing instruction allowed: an XML declaration at the very start (after a byte-order mark).
        let declarationStart = n >= 3 && body[0] == 0xEF && body[1] == 0xBB && body[2] == 0xBF ? 3 : 0
        let hasDeclaration =
            hasPrefix(body, at: declarationStart, "<?xml") && declarationStart + 5 < n
            && isXMLSpace(body[declarationStart + 5])
        while i < n {
            let b = body[i]
            if b == 0 {
                // U+0000 is never allowed in XML; refusing it also stops the parser from guessing UTF-16 or UCS-4.
                throw Fault.parseError("the body contains a NUL character.")
            }
            if b == UInt8(ascii: "<") {
                sawMarkup = true
                if i + 1 < n, body[i + 1] == UInt8(ascii: "!") {
                    if hasPrefix(body, at: i + 2, "DOCTYPE") || hasPrefix(body, at: i + 2, "ENTITY") {
                        throw Fault.parseError("DOCTYPE and entity declarations are not allowed.")
                    }
                }
                // XML-RPC has no processing instructions, and FoundationXML dereferences the NULL data of one
                // without any (`<?x?>` crashed the daemon, found by Fuzz/XMLRPCDecoderFuzz): refused before
                // parsing, like DOCTYPE, also inside comments and CDATA.
                if i + 1 < n, body[i + 1] == UInt8(ascii: "?"), !(hasDeclaration && i == declarationStart) {
                    throw Fault.parseError("processing instructions are not allowed (only the XML declaration).")
                }
            }
            i += 1
        }
        guard sawMarkup else {
            throw Fault.parseError(n == 0 ? "the body is empty." : "the body holds no XML element.")
        }
        if let (name, line) = firstElementWithAttribute(body) {
            throw mode.invalid(
                "<\(name)> on line \(line) carries an attribute; attributes are not part of XML-RPC.")
        }

        // The body is UTF-8 whatever the XML declaration says (PHP clients declare ISO-8859-1 while sending ASCII):
        // blank the declaration out so that the parser reads UTF-8 and never switches to another decoder. Newlines
        // stay, so line numbers in messages still match the body as sent.
        var start = 0
        if n >= 3, body[0] == 0xEF, body[1] == 0xBB, body[2] == 0xBF { start = 3 }
        if hasPrefix(body, at: start, "<?xml"), start + 5 < n, isXMLSpace(body[start + 5]),
            let end = declarationEnd(body, from: start + 5)
        {
            var copy = body
            for j in start..<end where copy[j] != UInt8(ascii: "\n") && copy[j] != UInt8(ascii: "\r") {
                copy[j] = UInt8(ascii: " ")
            }
            return Data(copy)
        }
        return Data(body)
    }

    /// The name (at most 40 bytes of it) and line of the first start tag that carries an attribute, if any.
    ///
    /// One forward pass: processing instructions (the XML declaration among them), comments and CDATA sections are
    /// skipped to their end, so a `>` or `=` inside them is not taken for markup; an unterminated one ends the scan
    /// and is left to the parser to report. Well-formedness is the parser's business: this only looks at what
    /// follows an element's name.
    package static func firstElementWithAttribute(_ body: [UInt8]) -> (name: String, line: Int)? {
        let n = body.count
        var i = 0
        var line = 1
        /// Moves `i` just past `terminator`, counting lines; returns false when the body ends first.
        func skip(past terminator: StaticString) -> Bool {
            terminator.withUTF8Buffer { t in
                while i < n {
                    if body[i] == t[0], i + t.count <= n {
                        var k = 1
                        while k < t.count && body[i + k] == t[k] { k += 1 }
                        if k == t.count {
                            i += t.count
                            return true
                        }
                    }
                    if body[i] == UInt8(ascii: "\n") { line += 1 }
                    i += 1
                }
                return false
            }
        }
        while i < n {
            let b = body[i]
            if b == UInt8(ascii: "\n") { line += 1 }
            guard b == UInt8(ascii: "<"), i + 1 < n else {
                i += 1
                continue
            }
            let next = body[i + 1]
            if next == UInt8(ascii: "?") {
                i += 2
                guard skip(past: "?>") else { return nil }
            } else if hasPrefix(body, at: i + 1, "!--") {
                i += 4
                guard skip(past: "-->") else { return nil }
            } else if hasPrefix(body, at: i + 1, "![CDATA[") {
                i += 9
                guard skip(past: "]]>") else { return nil }
            } else if next == UInt8(ascii: "!") || next == UInt8(ascii: "/") {
                i += 2
            } else {
                let nameStart = i + 1
                var j = nameStart
                while j < n, !isXMLSpace(body[j]), body[j] != UInt8(ascii: ">"), body[j] != UInt8(ascii: "/"),
                    body[j] != UInt8(ascii: "<")
                {
                    j += 1
                }
                let nameEnd = j
                let tagLine = line
                var declarations = 0
                while true {
                    while j < n, isXMLSpace(body[j]) {
                        if body[j] == UInt8(ascii: "\n") { line += 1 }
                        j += 1
                    }
                    guard j < n, j > nameEnd, body[j] != UInt8(ascii: ">"), body[j] != UInt8(ascii: "/"),
                        body[j] != UInt8(ascii: "<")
                    else { break }
                    // An attribute. Namespace declarations (Apache XML-RPC declares `xmlns:ex` for its extension
                    // types) are let through, a few per element; anything else is refused.
                    if declarations < maxNamespaceDeclarations, hasPrefix(body, at: j, "xmlns"),
                        let after = namespaceDeclarationEnd(body, from: j + 5, line: &line)
                    {
                        declarations += 1
                        j = after
                        continue
                    }
                    let shown = body[nameStart..<min(nameEnd, nameStart + 40)]
                    return (String(decoding: shown, as: UTF8.self), tagLine)
                }
                i = j
            }
        }
        return nil
    }

    /// Namespace declarations allowed on one element (each is checked against the others by the parser).
    static let maxNamespaceDeclarations = 4

    /// For bytes just after `xmlns`: the index past a declaration's quoted value (`="..."` or `:p='...'`), or nil
    /// when they are not a namespace declaration.
    private static func namespaceDeclarationEnd(_ body: [UInt8], from: Int, line: inout Int) -> Int? {
        let n = body.count
        var j = from
        if j < n, body[j] == UInt8(ascii: ":") {
            j += 1
            let prefixStart = j
            while j < n, !isXMLSpace(body[j]), body[j] != UInt8(ascii: "="), body[j] != UInt8(ascii: ">") { j += 1 }
            guard j > prefixStart else { return nil }
        }
        while j < n, isXMLSpace(body[j]) { j += 1 }
        guard j < n, body[j] == UInt8(ascii: "=") else { return nil }
        j += 1
        while j < n, isXMLSpace(body[j]) { j += 1 }
        guard j < n, body[j] == UInt8(ascii: "\"") || body[j] == UInt8(ascii: "'") else { return nil }
        let quote = body[j]
        j += 1
        var lines = 0
        while j < n, body[j] != quote {
            if body[j] == UInt8(ascii: "\n") { lines += 1 }
            j += 1
        }
        guard j < n else { return nil }
        line += lines
        return j + 1
    }

    package static func isValidUTF8(_ bytes: [UInt8]) -> Bool {
        // Fast path for ASCII, the usual case.
        if bytes.allSatisfy({ $0 < 0x80 }) { return true }
        var parser = Unicode.UTF8.ForwardParser()
        var iterator = bytes.makeIterator()
        while true {
            switch parser.parseScalar(from: &iterator) {
            case .valid: continue
            case .emptyInput: return true
            case .error: return false
            }
        }
    }

    private static func hasPrefix(_ bytes: [UInt8], at offset: Int, _ literal: StaticString) -> Bool {
        literal.withUTF8Buffer { lit in
            guard offset + lit.count <= bytes.count else { return false }
            for k in 0..<lit.count where bytes[offset + k] != lit[k] { return false }
            return true
        }
    }

    /// The index just past the `?>` that ends an XML declaration, if there is one.
    private static func declarationEnd(_ bytes: [UInt8], from: Int) -> Int? {
        var j = from
        while j + 1 < bytes.count {
            if bytes[j] == UInt8(ascii: "?"), bytes[j + 1] == UInt8(ascii: ">") { return j + 2 }
            if bytes[j] == UInt8(ascii: "<") { return nil }
            j += 1
        }
        return nil
    }

    package static func isXMLSpace(_ b: UInt8) -> Bool {
        b == 0x20 || b == 0x09 || b == 0x0A || b == 0x0D
    }
}

// MARK: - Tree building

/// Receives the parser's events and builds the values. One per parse; never shared between threads.
private final class TreeBuilder: NSObject, XMLParserDelegate {
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

    private func fail(_ parser: XMLParser, _ fault: Fault) {
        guard !stopped else { return }
        self.fault = fault
        parser.abortParsing()
    }

    private func invalid(_ parser: XMLParser, _ why: String) {
        fail(parser, mode.invalid(why))
    }

    // MARK: Events

    package func parser(
        _ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?, qualifiedName: String?,
        attributes: [String: String] = [:]
    ) {
        guard !stopped else { return }
        guard let parent = stack.last else {
            if rootClosed {
                invalid(parser, "the body holds more than one root element.")
            } else if elementName == mode.rootName {
                stack.append(Frame(kind: mode == .request ? .methodCall : .methodResponse, tag: elementName))
            } else {
                invalid(parser, "the root element is <\(Self.quoted(elementName))>, expected <\(mode.rootName)>.")
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
                invalid(parser, "<\(Self.quoted(elementName))> is not an XML-RPC type.")
                return
            }
            guard parent.seen & Seen.typed == 0 else {
                invalid(parser, "a <value> holds more than one type element.")
                return
            }
            (kind, bit) = (typed, Seen.typed)
            stack[stack.count - 1].typeTag = elementName
        default:
            invalid(parser, "<\(Self.quoted(elementName))> is not allowed inside <\(parent.tag)>.")
            return
        }

        if case .methodResponse = parent.kind, parent.seen != 0 {
            invalid(parser, "<methodResponse> holds more than one of <params> and <fault>.")
            return
        }
        if bit != 0 {
            guard parent.seen & bit == 0 else {
                invalid(parser, "<\(parent.tag)> holds more than one <\(elementName)>.")
                return
            }
            stack[stack.count - 1].seen |= bit
        }
        if case .value = kind {
            valueDepth += 1
            if valueDepth > maxDepth {
                fail(parser, Fault.nestingTooDeep(limit: maxDepth))
                return
            }
        }
        stack.append(Frame(kind: kind, tag: elementName))
    }

    package func parser(_ parser: XMLParser, foundCharacters string: String) {
        addText(parser, string)
    }

    package func parser(_ parser: XMLParser, foundIgnorableWhitespace whitespaceString: String) {
        addText(parser, whitespaceString)
    }

    package func parser(_ parser: XMLParser, foundCDATA cdataBlock: Data) {
        addText(parser, String(decoding: cdataBlock, as: UTF8.self))
    }

    private func addText(_ parser: XMLParser, _ text: String) {
        guard !stopped, let top = stack.last else { return }
        switch top.kind {
        case .methodName, .name, .scalar, .value:
            stack[stack.count - 1].text += text
        default:
            if !Self.isBlank(text) { invalid(parser, "text is not allowed inside <\(top.tag)>.") }
        }
    }

    package func parser(
        _ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?, qualifiedName: String?
    ) {
        guard !stopped, let frame = stack.popLast() else { return }
        let parentIndex = stack.count - 1

        switch frame.kind {
        case .methodCall:
            rootClosed = true
            guard let name = methodName else { return invalid(parser, "<methodCall> has no <methodName>.") }
            guard !name.isEmpty else { return invalid(parser, "<methodName> is empty.") }

        case .methodResponse:
            rootClosed = true
            if responseValue == nil, responseFault == nil {
                invalid(parser, "<methodResponse> holds neither <params> nor <fault>.")
            }

        case .methodName:
            methodName = Self.trimmed(frame.text)

        case .params:
            if mode == .response {
                guard frame.values.count == 1 else {
                    return invalid(parser, "<methodResponse> must hold exactly one <param>, not \(frame.values.count).")
                }
                responseValue = frame.values[0]
            } else {
                params = frame.values
            }

        case .param:
            guard let value = frame.values.first else { return invalid(parser, "a <param> holds no <value>.") }
            stack[parentIndex].values.append(value)

        case .fault:
            guard let value = frame.values.first else { return invalid(parser, "<fault> holds no <value>.") }
            guard let code = value[member: "faultCode"]?.intValue, let intCode = Int(exactly: code) else {
                return invalid(parser, "<fault> has no integer faultCode member.")
            }
            let message: String
            switch value[member: "faultString"] {
            case nil: message = ""
            case .string(let s)?: message = s
            default: return invalid(parser, "the faultString member of <fault> is not a string.")
            }
            responseFault = Fault(code: intCode, message: message)

        case .value:
            valueDepth -= 1
            let value: XMLRPCValue
            if let typed = frame.values.first {
                guard Self.isBlank(frame.text) else {
                    return invalid(parser, "a <value> holds text next to a <\(frame.typeTag ?? "type")>.")
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
                invalid(parser, why.message)
            }

        case .array:
            guard let data = frame.values.first else { return invalid(parser, "an <array> holds no <data>.") }
            stack[parentIndex].values.append(data)

        case .data:
            stack[parentIndex].values.append(.array(frame.values))

        case .structure:
            stack[parentIndex].values.append(.structure(frame.members))

        case .member:
            guard let name = frame.memberName else { return invalid(parser, "a struct <member> has no <name>.") }
            guard let value = frame.values.first else {
                return invalid(parser, "struct member '\(Self.quoted(name))' has no <value>.")
            }
            // A repeated name: the last value wins.
            stack[parentIndex].members[name] = value

        case .name:
            stack[parentIndex].memberName = frame.text
        }
    }

    package func parser(_ parser: XMLParser, parseErrorOccurred parseError: Error) {
        guard !stopped else { return }
        // 2xx are namespace complaints (an `ex:` prefix nobody declared): the document is still well-formed XML.
        let code = (parseError as NSError).code
        if (200..<300).contains(code) { return }
        parserErrorLine = parser.lineNumber
        parser.abortParsing()
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

// MARK: - Base64

package enum Base64 {
    package static let alphabet: [UInt8] = Array(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    /// 255 = not a base64 digit.
    private static let reverse: [UInt8] = {
        var table = [UInt8](repeating: 255, count: 256)
        for (i, c) in alphabet.enumerated() { table[Int(c)] = UInt8(i) }
        return table
    }()

    /// Decodes standard base64, skipping XML whitespace; "=" padding may be omitted. Nil when the text is not base64.
    package static func decode(_ text: String) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count / 4 * 3 + 3)
        var acc: UInt32 = 0
        var bits = 0
        var sextets = 0
        var padding = 0
        for c in text.utf8 {
            if XMLRPCDecoder.isXMLSpace(c) { continue }
            if c == UInt8(ascii: "=") {
                padding += 1
                continue
            }
            // No digits after padding.
            guard padding == 0 else { return nil }
            let v = reverse[Int(c)]
            guard v != 255 else { return nil }
            acc = (acc << 6) | UInt32(v)
            bits += 6
            sextets += 1
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: acc >> UInt32(bits)))
            }
        }
        // A lone sextet cannot carry a byte; at most two "=" and only where they complete a group of four.
        let remainder = sextets % 4
        if remainder == 1 { return nil }
        if padding > 0 && (remainder == 0 || remainder + padding != 4) { return nil }
        return out
    }
}
