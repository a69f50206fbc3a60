//! The write token. Unban is the dashboard's only write; it needs the server to have a
//! token (the variable `dashboard.token_env` names) and the request to carry the same one:
//! 403 when the server has none (nothing the client can do), 401 when it is missing or wrong.

use axum::http::{HeaderMap, StatusCode, header};
use sha2::{Digest, Sha256};

use super::error::ApiError;

/// The server's token, kept only as its SHA-256: comparing digests takes the same time
/// whatever prefix a guess shares with the token, and no `Debug` can print it.
pub struct Token([u8; 32]);

impl Token {
    pub fn new(secret: &str) -> Token {
        Token(Sha256::digest(secret.as_bytes()).into())
    }

    fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        digest == self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(redacted)")
    }
}

/// The bearer token of a request, if it has one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Allows a write when the server has a token and `presented` is it.
pub fn authorize(server: Option<&Token>, presented: Option<&str>) -> Result<(), ApiError> {
    let Some(token) = server else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this dashboard is read-only: start it with a token (dashboard.token_env)",
        ));
    };
    match presented {
        Some(p) if !p.is_empty() && token.matches(p) => Ok(()),
        Some(p) if !p.is_empty() => Err(ApiError::new(StatusCode::UNAUTHORIZED, "wrong token")),
        _ => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing token: send Authorization: Bearer <token>",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_need_a_server_token_and_the_same_one_in_the_request() {
        let token = Token::new("s3cret");
        assert!(authorize(Some(&token), Some("s3cret")).is_ok());
        let status = |r: Result<(), ApiError>| r.unwrap_err().status;
        assert_eq!(
            status(authorize(Some(&token), Some("nope"))),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(authorize(Some(&token), None)),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(authorize(None, Some("s3cret"))),
            StatusCode::FORBIDDEN
        );
    }

    #[test]
    fn debug_never_shows_the_token() {
        assert_eq!(format!("{:?}", Token::new("s3cret")), "Token(redacted)");
    }

    #[test]
    fn bearer_reads_the_authorization_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&headers), None);
    }
}
