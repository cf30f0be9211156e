import Conntrack
import Foundation

/// The addresses ctd's listener answers on: the listen address, or every address of this host's interfaces when
/// it listens on a wildcard (0.0.0.0, ::).
enum LocalAddresses {
    static func listening(on listen: String) -> [IPAddress] {
        if let address = IPAddress(listen), !isWildcard(listen) { return [address] }
        var out: [IPAddress] = []
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0, let first = list else { return out }
        defer { freeifaddrs(list) }
        for entry in sequence(first: first, next: { $0.pointee.ifa_next }) {
            guard let sa = entry.pointee.ifa_addr else { continue }
            var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            let family = Int32(sa.pointee.sa_family)
            guard family == AF_INET || family == AF_INET6 else { continue }
            let length = socklen_t(family == AF_INET ? MemoryLayout<sockaddr_in>.size : MemoryLayout<sockaddr_in6>.size)
            guard getnameinfo(sa, length, &host, socklen_t(host.count), nil, 0, NI_NUMERICHOST) == 0 else { continue }
            // A link-local IPv6 address comes with its zone ("fe80::1%eth0").
            let text = String(cString: host).split(separator: "%").first.map(String.init) ?? ""
            if let address = IPAddress(text) { out.append(address) }
        }
        return out
    }

    static func isWildcard(_ listen: String) -> Bool { ["0.0.0.0", "::", "*", ""].contains(listen) }
}
