import Foundation

/// The linear pre-scan every body passes before the XML parser sees it.
extension XMLRPCDecoder {
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
