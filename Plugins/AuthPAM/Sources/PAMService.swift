import CPAM

/// One PAM service (`/etc/pam.d/NAME`, or `NAME` in a test directory) and a non-interactive login check against it.
///
/// Every call opens its own PAM handle: calls from several threads run in parallel. A call blocks for as long as
/// the PAM stack takes (pam_unix sleeps about 2 s after a wrong password).
struct PAMService: Sendable, Equatable {
    /// The service name given to `pam_start`.
    var name: String
    /// A directory holding the service file (`pam_start_confdir`); `nil` for the system configuration.
    var confdir: String?

    /// What PAM said about one login.
    enum Outcome: Sendable, Equatable {
        /// Authenticated and the account may log in; `user` is PAM_USER afterwards (modules may canonicalise it).
        case accepted(user: String)
        /// `pam_authenticate` refused: wrong password or unknown user. `detail` is PAM's text.
        case authenticationFailed(detail: String)
        /// `pam_acct_mgmt` refused: expired, locked, not allowed on this service, password must be changed.
        case accountRefused(detail: String)
        /// PAM could not do its job (configuration, module, unreachable backend).
        case failed(detail: String)
    }

    /// Runs pam_start → PAM_RHOST → pam_authenticate → pam_acct_mgmt → pam_end.
    /// - Parameters:
    ///   - user: the user name; must not contain NUL.
    ///   - password: the password; must not contain NUL. The C copy made here is wiped afterwards.
    ///   - remoteHost: the client's address (PAM_RHOST).
    func authenticate(user: String, password: String, remoteHost: String) -> Outcome {
        var secret = Array(password.utf8CString)
        defer { secret.withUnsafeMutableBytes { cpam_wipe($0.baseAddress, $0.count) } }
        var error = [CChar](repeating: 0, count: Int(CPAM_ERROR_SIZE))
        var pamUser = [CChar](repeating: 0, count: Int(CPAM_USER_SIZE))
        let code = secret.withUnsafeBufferPointer { secretBuffer in
            error.withUnsafeMutableBufferPointer { errorBuffer in
                pamUser.withUnsafeMutableBufferPointer { userBuffer in
                    withOptionalCString(confdir) { confdirPointer in
                        cpam_authenticate(
                            name, user, secretBuffer.baseAddress, confdirPointer, remoteHost,
                            errorBuffer.baseAddress, errorBuffer.count, userBuffer.baseAddress, userBuffer.count)
                    }
                }
            }
        }
        let detail = String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        switch code {
        case CPAM_OK:
            let canonical = String(decoding: pamUser.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            return .accepted(user: canonical.isEmpty ? user : canonical)
        case CPAM_AUTH_FAILED:
            return .authenticationFailed(detail: detail)
        case CPAM_ACCOUNT_REFUSED:
            return .accountRefused(detail: detail)
        default:
            return .failed(detail: detail.isEmpty ? "cpam_authenticate returned \(code)" : detail)
        }
    }
}

private func withOptionalCString<R>(_ string: String?, _ body: (UnsafePointer<CChar>?) -> R) -> R {
    guard let string else { return body(nil) }
    return string.withCString { body($0) }
}
