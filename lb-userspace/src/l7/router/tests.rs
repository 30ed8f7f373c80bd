use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    thread,
    time::Instant,
};

use http::{
    header::{HeaderName, HeaderValue},
    HeaderMap, Method, Request, Version,
};

use super::*;

fn spec(id: &str) -> RouteSpec {
    RouteSpec::new(id, format!("up-{id}"))
}

fn strs(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn exact(p: &str) -> PathMatch {
    PathMatch::Exact(p.to_owned())
}

fn prefix(p: &str) -> PathMatch {
    PathMatch::Prefix(p.to_owned())
}

fn pat(p: &str) -> PathMatch {
    PathMatch::Pattern(p.to_owned())
}

fn header(name: &'static str, value: HeaderValueMatch) -> HeaderMatch {
    HeaderMatch {
        name: HeaderName::from_static(name),
        value,
    }
}

fn table(specs: Vec<RouteSpec>) -> RouteTable {
    match RouteTable::build_all(specs) {
        Ok(t) => t,
        Err(errors) => panic!("table does not build: {errors:#?}"),
    }
}

fn find_with(
    r: &dyn Resolver,
    host: Option<&str>,
    path: &str,
    method: Method,
    headers: &HeaderMap,
) -> Option<String> {
    let req = RequestInfo::new(host, path, &method, headers);
    r.resolve(&req).map(|m| m.route.id().to_owned())
}

/// The id of the route that a GET without headers reaches.
fn find(r: &dyn Resolver, host: Option<&str>, path: &str) -> Option<String> {
    find_with(r, host, path, Method::GET, &HeaderMap::new())
}

fn some(id: &str) -> Option<String> {
    Some(id.to_owned())
}

// ---------------------------------------------------------------- precedence

#[test]
fn rule1_priority_beats_every_other_rule() {
    let t = table(vec![
        RouteSpec {
            hosts: strs(&["api.example.com"]),
            paths: vec![exact("/v1/users")],
            methods: vec![Method::GET],
            headers: vec![header("x-a", HeaderValueMatch::Present)],
            ..spec("specific")
        },
        RouteSpec {
            priority: 1,
            ..spec("catch-all")
        },
        RouteSpec {
            priority: -1,
            paths: vec![exact("/low")],
            ..spec("negative")
        },
        spec("default-priority"),
    ]);
    let mut h = HeaderMap::new();
    h.insert("x-a", HeaderValue::from_static("1"));
    assert_eq!(
        find_with(&t, Some("api.example.com"), "/v1/users", Method::GET, &h),
        some("catch-all")
    );
    // -1 loses to the default 0 even with an exact path.
    let t = table(vec![
        RouteSpec {
            priority: -1,
            paths: vec![exact("/low")],
            ..spec("negative")
        },
        spec("default-priority"),
    ]);
    assert_eq!(find(&t, None, "/low"), some("default-priority"));
}

#[test]
fn rule1_priority_crosses_host_groups_and_pattern_layers() {
    let t = table(vec![
        RouteSpec {
            hosts: strs(&["api.example.com"]),
            paths: vec![pat("/users/{id}")],
            ..spec("exact-host")
        },
        RouteSpec {
            priority: 5,
            paths: vec![pat("/{*rest}")],
            ..spec("any-host-catch-all")
        },
    ]);
    assert_eq!(
        find(&t, Some("api.example.com"), "/users/1"),
        some("any-host-catch-all")
    );
}

#[test]
fn rule2_host_exact_beats_wildcard_beats_any() {
    // Listed least specific first: order cannot explain the outcome.
    let t = table(vec![
        RouteSpec {
            paths: vec![prefix("/")],
            ..spec("any")
        },
        RouteSpec {
            hosts: strs(&["*.example.com"]),
            paths: vec![prefix("/")],
            ..spec("wildcard")
        },
        RouteSpec {
            hosts: strs(&["api.example.com"]),
            paths: vec![prefix("/")],
            ..spec("exact")
        },
    ]);
    assert_eq!(find(&t, Some("api.example.com"), "/x"), some("exact"));
    assert_eq!(find(&t, Some("www.example.com"), "/x"), some("wildcard"));
    assert_eq!(find(&t, Some("example.org"), "/x"), some("any"));
    assert_eq!(find(&t, None, "/x"), some("any"));
    // Host beats path: an exact host with a prefix path wins over a
    // wildcard host with an exact path.
    let t = table(vec![
        RouteSpec {
            hosts: strs(&["*.example.com"]),
            paths: vec![exact("/x")],
            ..spec("wildcard-exact-path")
        },
        RouteSpec {
            hosts: strs(&["api.example.com"]),
            paths: vec![prefix("/")],
            ..spec("exact-host-prefix")
        },
    ]);
    assert_eq!(
        find(&t, Some("api.example.com"), "/x"),
        some("exact-host-prefix")
    );
}

#[test]
fn rule2_wildcards_cover_one_label_and_longer_suffix_wins() {
    let t = table(vec![
        RouteSpec {
            hosts: strs(&["*.example.com"]),
            ..spec("short")
        },
        RouteSpec {
            hosts: strs(&["*.b.example.com"]),
            ..spec("long")
        },
    ]);
    assert_eq!(find(&t, Some("b.example.com"), "/"), some("short"));
    assert_eq!(find(&t, Some("a.example.com"), "/"), some("short"));
    assert_eq!(find(&t, Some("a.b.example.com"), "/"), some("long"));
    assert_eq!(find(&t, Some("example.com"), "/"), None);
    assert_eq!(find(&t, Some("x.a.example.com"), "/"), None);
    assert_eq!(find(&t, Some("b.example.com.evil.org"), "/"), None);
    assert_eq!(find(&t, None, "/"), None);
}

#[test]
fn rule3_path_exact_pattern_prefix_any() {
    let t = table(vec![
        spec("no-paths"),
        RouteSpec {
            paths: vec![prefix("/")],
            ..spec("prefix-root")
        },
        RouteSpec {
            paths: vec![prefix("/api/")],
            ..spec("prefix-api")
        },
        RouteSpec {
            paths: vec![pat("/api/{version}")],
            ..spec("pattern")
        },
        RouteSpec {
            paths: vec![exact("/api/v1")],
            ..spec("exact")
        },
    ]);
    assert_eq!(find(&t, None, "/api/v1"), some("exact"));
    assert_eq!(find(&t, None, "/api/v2"), some("pattern"));
    assert_eq!(find(&t, None, "/api/v2/users"), some("prefix-api"));
    assert_eq!(find(&t, None, "/other"), some("prefix-root"));
    assert_eq!(
        find_with(&t, None, "*", Method::OPTIONS, &HeaderMap::new()),
        some("no-paths")
    );
}

#[test]
fn rule3_longer_prefix_wins_and_prefixes_are_strings() {
    let t = table(vec![
        RouteSpec {
            paths: vec![prefix("/a")],
            ..spec("a")
        },
        RouteSpec {
            paths: vec![prefix("/a/b/")],
            ..spec("ab")
        },
        RouteSpec {
            paths: vec![prefix("/a/b/c")],
            ..spec("abc")
        },
    ]);
    assert_eq!(find(&t, None, "/a/b/cd"), some("abc"));
    assert_eq!(find(&t, None, "/a/b/x"), some("ab"));
    assert_eq!(find(&t, None, "/a/b"), some("a"));
    assert_eq!(find(&t, None, "/apiary"), some("a"));
    assert_eq!(find(&t, None, "/b"), None);
    // A non-ASCII path is sliced on character boundaries only.
    assert_eq!(find(&t, None, "/aé"), some("a"));
}

#[test]
fn rule3_exact_beats_the_same_static_pattern() {
    let t = table(vec![
        RouteSpec {
            paths: vec![pat("/files/logo.png")],
            ..spec("static-pattern")
        },
        RouteSpec {
            paths: vec![exact("/files/logo.png")],
            ..spec("exact")
        },
    ]);
    assert_eq!(find(&t, None, "/files/logo.png"), some("exact"));
}

#[test]
fn rule3_patterns_static_beats_affixed_beats_param_beats_catch_all() {
    let t = table(vec![
        RouteSpec {
            paths: vec![pat("/{*all}")],
            ..spec("root-catch-all")
        },
        RouteSpec {
            paths: vec![pat("/files/{*rest}")],
            ..spec("catch-all")
        },
        RouteSpec {
            paths: vec![pat("/files/{name}")],
            ..spec("param")
        },
        RouteSpec {
            paths: vec![pat("/files/img-{name}")],
            ..spec("affixed")
        },
        RouteSpec {
            paths: vec![pat("/files/logo.png")],
            ..spec("static")
        },
    ]);
    assert_eq!(find(&t, None, "/files/logo.png"), some("static"));
    assert_eq!(find(&t, None, "/files/img-1"), some("affixed"));
    assert_eq!(find(&t, None, "/files/a.txt"), some("param"));
    assert_eq!(find(&t, None, "/files/a/b"), some("catch-all"));
    assert_eq!(find(&t, None, "/other/x"), some("root-catch-all"));
    // Neither `{name}` nor `{*rest}` matches an empty value.
    assert_eq!(find(&t, None, "/files/"), some("root-catch-all"));

    // The first segment that differs decides: static `acme` beats `{tenant}`.
    let t = table(vec![
        RouteSpec {
            paths: vec![pat("/{tenant}/admin")],
            ..spec("tenant-admin")
        },
        RouteSpec {
            paths: vec![pat("/acme/{page}")],
            ..spec("acme-page")
        },
    ]);
    assert_eq!(find(&t, None, "/acme/admin"), some("acme-page"));
    assert_eq!(find(&t, None, "/other/admin"), some("tenant-admin"));

    // Longer affix first.
    let t = table(vec![
        RouteSpec {
            paths: vec![pat("/img/{x}.png")],
            ..spec("png")
        },
        RouteSpec {
            paths: vec![pat("/img/{x}.min.png")],
            ..spec("min-png")
        },
    ]);
    assert_eq!(find(&t, None, "/img/a.min.png"), some("min-png"));
    assert_eq!(find(&t, None, "/img/a.png"), some("png"));
}

#[test]
fn rule4_constrained_beats_unconstrained_and_more_beats_fewer() {
    let t = table(vec![
        RouteSpec {
            paths: vec![prefix("/")],
            ..spec("open")
        },
        RouteSpec {
            paths: vec![prefix("/")],
            methods: vec![Method::GET],
            ..spec("get")
        },
        RouteSpec {
            paths: vec![prefix("/")],
            methods: vec![Method::GET],
            headers: vec![header("x-canary", HeaderValueMatch::Present)],
            ..spec("get-canary")
        },
    ]);
    let mut canary = HeaderMap::new();
    canary.insert("x-canary", HeaderValue::from_static("1"));
    let none = HeaderMap::new();
    assert_eq!(
        find_with(&t, None, "/x", Method::GET, &canary),
        some("get-canary")
    );
    assert_eq!(find_with(&t, None, "/x", Method::GET, &none), some("get"));
    assert_eq!(
        find_with(&t, None, "/x", Method::POST, &canary),
        some("open")
    );
}

#[test]
fn rule5_earlier_route_wins_a_full_tie() {
    let t = table(vec![
        RouteSpec {
            hosts: strs(&["a.example.com"]),
            paths: vec![prefix("/x")],
            ..spec("first")
        },
        RouteSpec {
            hosts: strs(&["a.example.com"]),
            paths: vec![prefix("/x")],
            ..spec("second")
        },
    ]);
    assert_eq!(find(&t, Some("a.example.com"), "/x"), some("first"));
    let t = table(vec![
        RouteSpec {
            paths: vec![pat("/u/{id}")],
            methods: vec![Method::GET],
            ..spec("first")
        },
        RouteSpec {
            paths: vec![pat("/u/{id}")],
            methods: vec![Method::POST],
            ..spec("second")
        },
        RouteSpec {
            paths: vec![pat("/u/{id}")],
            methods: vec![Method::GET],
            ..spec("third")
        },
    ]);
    assert_eq!(find(&t, None, "/u/1"), some("first"));
    assert_eq!(
        find_with(&t, None, "/u/1", Method::POST, &HeaderMap::new()),
        some("second")
    );
}

#[test]
fn a_more_specific_route_that_refuses_the_method_does_not_hide_others() {
    let t = table(vec![
        RouteSpec {
            paths: vec![pat("/{*rest}")],
            ..spec("root")
        },
        RouteSpec {
            paths: vec![pat("/a/{*rest}")],
            ..spec("a")
        },
        RouteSpec {
            paths: vec![pat("/a/b/{*rest}")],
            methods: vec![Method::GET],
            ..spec("ab-get")
        },
        RouteSpec {
            paths: vec![pat("/a/b/c/{x}")],
            methods: vec![Method::GET],
            ..spec("abc-get")
        },
        RouteSpec {
            hosts: strs(&["api.example.com"]),
            paths: vec![exact("/a/b/c/d")],
            methods: vec![Method::PUT],
            ..spec("exact-host-put")
        },
    ]);
    let none = HeaderMap::new();
    let host = Some("api.example.com");
    assert_eq!(find(&t, host, "/a/b/c/d"), some("abc-get"));
    assert_eq!(
        find_with(&t, host, "/a/b/c/d", Method::PUT, &none),
        some("exact-host-put")
    );
    assert_eq!(
        find_with(&t, host, "/a/b/c/d", Method::POST, &none),
        some("a")
    );
    assert_eq!(find_with(&t, host, "/b", Method::POST, &none), some("root"));
}

#[test]
fn several_hosts_and_paths_per_route() {
    let t = table(vec![
        RouteSpec {
            hosts: strs(&["a.example.com", "*.b.example.com", "A.example.com."]),
            paths: vec![exact("/x"), prefix("/y/"), pat("/z/{id}"), exact("/x")],
            ..spec("multi")
        },
        RouteSpec {
            paths: vec![prefix("/")],
            ..spec("fallback")
        },
    ]);
    for host in ["a.example.com", "q.b.example.com"] {
        for path in ["/x", "/y/1", "/z/2"] {
            assert_eq!(find(&t, Some(host), path), some("multi"), "{host}{path}");
        }
    }
    assert_eq!(find(&t, Some("c.example.com"), "/x"), some("fallback"));
    let req_headers = HeaderMap::new();
    let req = RequestInfo::new(Some("a.example.com"), "/y/1", &Method::GET, &req_headers);
    let m = t.resolve(&req).unwrap();
    assert_eq!(m.path_index, Some(1));
    assert_eq!(m.matched_path(), Some(&prefix("/y/")));
}

// --------------------------------------------------------------------- hosts

#[test]
fn request_hosts_are_normalised() {
    let t = table(vec![
        RouteSpec {
            hosts: strs(&["API.Example.com."]),
            ..spec("api")
        },
        RouteSpec {
            hosts: strs(&["[::1]"]),
            ..spec("v6-bracketed")
        },
        RouteSpec {
            hosts: strs(&["2001:DB8:0:0::7"]),
            ..spec("v6-bare")
        },
        RouteSpec {
            hosts: strs(&["10.0.0.1"]),
            ..spec("v4")
        },
        RouteSpec {
            hosts: strs(&["*.0.0.1"]),
            ..spec("wildcard-digits")
        },
    ]);
    for host in [
        "api.example.com",
        "API.EXAMPLE.COM",
        "api.example.com.",
        "api.example.com:8443",
        "Api.Example.Com.:443",
    ] {
        assert_eq!(find(&t, Some(host), "/"), some("api"), "{host}");
    }
    for host in ["[::1]", "[::1]:8080", "[0:0::1]:8080", "::1"] {
        assert_eq!(find(&t, Some(host), "/"), some("v6-bracketed"), "{host}");
    }
    assert_eq!(find(&t, Some("[2001:db8::7]:443"), "/"), some("v6-bare"));
    assert_eq!(find(&t, Some("10.0.0.1:80"), "/"), some("v4"));
    // An IPv4 literal is not a name under a wildcard.
    assert_eq!(find(&t, Some("9.0.0.1"), "/"), None);
    assert_eq!(find(&t, Some(""), "/"), None);
    assert_eq!(find(&t, Some(":80"), "/"), None);
}

#[test]
fn star_host_is_any_host() {
    let t = table(vec![RouteSpec {
        hosts: strs(&["*"]),
        ..spec("star")
    }]);
    assert_eq!(find(&t, Some("whatever.org"), "/"), some("star"));
    assert_eq!(find(&t, None, "/"), some("star"));
}

// ---------------------------------------------------- methods, headers, paths

#[test]
fn methods_match_exactly() {
    let t = table(vec![RouteSpec {
        methods: vec![Method::GET, Method::HEAD],
        ..spec("read")
    }]);
    let none = HeaderMap::new();
    assert_eq!(find_with(&t, None, "/", Method::HEAD, &none), some("read"));
    assert_eq!(find_with(&t, None, "/", Method::DELETE, &none), None);
    let custom = Method::from_bytes(b"PURGE").unwrap();
    assert_eq!(find_with(&t, None, "/", custom, &none), None);
}

#[test]
fn header_matchers() {
    let t = table(vec![RouteSpec {
        headers: vec![
            header("x-env", HeaderValueMatch::Exact("prod".into())),
            header("authorization", HeaderValueMatch::Prefix("Bearer ".into())),
            header("x-trace", HeaderValueMatch::Present),
        ],
        ..spec("h")
    }]);
    let build = |pairs: &[(&'static str, &'static str)]| {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    };
    let ok = build(&[
        ("x-env", "prod"),
        ("authorization", "Bearer abc"),
        ("x-trace", ""),
    ]);
    assert_eq!(find_with(&t, None, "/", Method::GET, &ok), some("h"));
    // One of several field lines is enough.
    let lines = build(&[
        ("x-env", "dev"),
        ("x-env", "prod"),
        ("authorization", "Bearer abc"),
        ("x-trace", "1"),
    ]);
    assert_eq!(find_with(&t, None, "/", Method::GET, &lines), some("h"));
    for bad in [
        build(&[
            ("x-env", "Prod"),
            ("authorization", "Bearer a"),
            ("x-trace", "1"),
        ]),
        build(&[
            ("x-env", "prod"),
            ("authorization", "bearer a"),
            ("x-trace", "1"),
        ]),
        build(&[("x-env", "prod"), ("authorization", "Bearer a")]),
        build(&[
            ("x-env", "prod, dev"),
            ("authorization", "Bearer a"),
            ("x-trace", "1"),
        ]),
    ] {
        assert_eq!(find_with(&t, None, "/", Method::GET, &bad), None, "{bad:?}");
    }
}

#[test]
fn params_are_extracted() {
    let t = table(vec![
        RouteSpec {
            paths: vec![pat("/users/{id}/posts/{post}")],
            ..spec("post")
        },
        RouteSpec {
            paths: vec![exact("/users"), pat("/static/{*rest}")],
            ..spec("static")
        },
        RouteSpec {
            paths: vec![pat("/img/{name}.png")],
            ..spec("png")
        },
    ]);
    let h = HeaderMap::new();
    let m = t
        .resolve(&RequestInfo::new(
            None,
            "/users/42/posts/7?x=1",
            &Method::GET,
            &h,
        ))
        .unwrap();
    assert_eq!(m.route.id(), "post");
    assert_eq!(m.route.upstream(), "up-post");
    assert_eq!(
        m.params,
        vec![("id".into(), "42".into()), ("post".into(), "7".into())]
    );
    assert_eq!(m.param("post"), Some("7"));
    assert_eq!(m.param("nope"), None);
    let m = t
        .resolve(&RequestInfo::new(
            None,
            "/static/css/a.css",
            &Method::GET,
            &h,
        ))
        .unwrap();
    assert_eq!(m.param("rest"), Some("css/a.css"));
    assert_eq!(m.path_index, Some(1));
    let m = t
        .resolve(&RequestInfo::new(None, "/users", &Method::GET, &h))
        .unwrap();
    assert!(m.params.is_empty());
    assert_eq!(m.path_index, Some(0));
    let m = t
        .resolve(&RequestInfo::new(None, "/img/cat.png", &Method::GET, &h))
        .unwrap();
    assert_eq!(m.param("name"), Some("cat"));
}

#[test]
fn paths_are_routed_as_sent() {
    let t = table(vec![
        RouteSpec {
            paths: vec![prefix("/admin")],
            ..spec("admin")
        },
        RouteSpec {
            paths: vec![prefix("/")],
            ..spec("public")
        },
    ]);
    assert_eq!(find(&t, None, "/admin/users"), some("admin"));
    for raw in ["/%61dmin", "//admin", "/./admin", "/x/../admin", "/ADMIN"] {
        assert_eq!(find(&t, None, raw), some("public"), "{raw}");
    }
}

#[test]
fn path_hazards_are_named() {
    use PathHazard::*;
    for (path, want) in [
        ("/", None),
        ("*", None),
        ("/a/b/", None),
        ("/a%20b/%C3%A9", None),
        ("/a/./b", Some(DotSegment)),
        ("/a/..", Some(DotSegment)),
        ("/..", Some(DotSegment)),
        ("//admin", Some(EmptySegment)),
        ("/a//b", Some(EmptySegment)),
        ("/a\\b", Some(Backslash)),
        ("/a%2fb", Some(EncodedSeparator)),
        ("/a%5Cb", Some(EncodedSeparator)),
        ("/%61dmin", Some(EncodedUnreserved)),
        ("/%2e%2e/x", Some(EncodedUnreserved)),
        ("/a%7e", Some(EncodedUnreserved)),
        ("/a%", Some(BadPercentEncoding)),
        ("/a%4", Some(BadPercentEncoding)),
        ("/a%zz", Some(BadPercentEncoding)),
    ] {
        assert_eq!(path_hazard(path), want, "{path}");
    }
}

// -------------------------------------------------------------- RequestInfo

fn parts(
    method: Method,
    uri: &str,
    version: Version,
    headers: &[(&'static str, &'static str)],
) -> http::request::Parts {
    let mut b = Request::builder().method(method).uri(uri).version(version);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

#[test]
fn from_parts_takes_the_host_and_the_path() {
    let p = parts(
        Method::GET,
        "/a/b?q=1",
        Version::HTTP_11,
        &[("host", "Example.COM.:8080")],
    );
    let r = RequestInfo::from_parts(&p).unwrap();
    assert_eq!(r.host(), Some("example.com"));
    assert_eq!(r.path(), "/a/b");
    assert_eq!(r.method(), Method::GET);

    // Absolute form: the target's authority wins, Host is ignored.
    let p = parts(
        Method::GET,
        "http://target.example/x",
        Version::HTTP_11,
        &[("host", "other.example")],
    );
    assert_eq!(
        RequestInfo::from_parts(&p).unwrap().host(),
        Some("target.example")
    );

    // HTTP/2: :authority, and a Host that agrees with it.
    let p = parts(
        Method::GET,
        "https://[::1]:8443/x",
        Version::HTTP_2,
        &[("host", "[0::1]")],
    );
    assert_eq!(RequestInfo::from_parts(&p).unwrap().host(), Some("[::1]"));
    let p = parts(Method::GET, "https://a.example/x", Version::HTTP_2, &[]);
    assert_eq!(
        RequestInfo::from_parts(&p).unwrap().host(),
        Some("a.example")
    );

    // HTTP/1.0 may go without Host; an empty Host names no host.
    let p = parts(Method::GET, "/", Version::HTTP_10, &[]);
    assert_eq!(RequestInfo::from_parts(&p).unwrap().host(), None);
    let p = parts(Method::GET, "/", Version::HTTP_11, &[("host", "")]);
    assert_eq!(RequestInfo::from_parts(&p).unwrap().host(), None);

    let p = parts(Method::OPTIONS, "*", Version::HTTP_11, &[("host", "a")]);
    assert_eq!(RequestInfo::from_parts(&p).unwrap().path(), "*");
}

#[test]
fn from_parts_refuses_what_cannot_be_routed() {
    type Case = (http::request::Parts, fn(&RequestError) -> bool);
    let cases: Vec<Case> = vec![
        (
            parts(Method::GET, "*", Version::HTTP_11, &[("host", "a")]),
            |e| matches!(e, RequestError::AsteriskNotOptions(_)),
        ),
        (
            parts(
                Method::CONNECT,
                "a.example:443",
                Version::HTTP_11,
                &[("host", "a")],
            ),
            |e| matches!(e, RequestError::NotOriginForm(_)),
        ),
        (parts(Method::GET, "/", Version::HTTP_11, &[]), |e| {
            *e == RequestError::MissingHost
        }),
        (
            parts(
                Method::GET,
                "/",
                Version::HTTP_11,
                &[("host", "a"), ("host", "a")],
            ),
            |e| *e == RequestError::MultipleHosts,
        ),
        (
            parts(
                Method::GET,
                "/",
                Version::HTTP_11,
                &[("host", "user@a.example")],
            ),
            |e| matches!(e, RequestError::InvalidHost(_)),
        ),
        (
            parts(
                Method::GET,
                "/",
                Version::HTTP_11,
                &[("host", "a.example:http")],
            ),
            |e| matches!(e, RequestError::InvalidHost(_)),
        ),
        (
            parts(Method::GET, "/", Version::HTTP_11, &[("host", "a b")]),
            |e| matches!(e, RequestError::InvalidHost(_)),
        ),
        (
            parts(
                Method::GET,
                "http://u@a.example/",
                Version::HTTP_11,
                &[("host", "a")],
            ),
            |e| matches!(e, RequestError::InvalidHost(_)),
        ),
        (
            parts(
                Method::GET,
                "https://a.example/",
                Version::HTTP_2,
                &[("host", "b.example")],
            ),
            |e| matches!(e, RequestError::HostMismatch { .. }),
        ),
    ];
    for (p, check) in cases {
        let err = RequestInfo::from_parts(&p).err();
        assert!(
            err.as_ref().is_some_and(check),
            "{} {} {:?}: {err:?}",
            p.method,
            p.uri,
            p.headers
        );
        assert_eq!(err.unwrap().status(), http::StatusCode::BAD_REQUEST);
    }
}

// -------------------------------------------------------------------- errors

#[test]
fn ambiguous_patterns_are_refused_naming_both_routes() {
    let err = RouteTable::build(vec![
        RouteSpec {
            paths: vec![pat("/{a}")],
            ..spec("first")
        },
        RouteSpec {
            paths: vec![exact("/x")],
            ..spec("unrelated")
        },
        RouteSpec {
            paths: vec![pat("/{b}")],
            ..spec("second")
        },
    ])
    .unwrap_err();
    assert_eq!(
        err,
        RouteError::PatternConflict {
            id: "second".into(),
            index: 2,
            pattern: "/{b}".into(),
            other_id: "first".into(),
            other_index: 0,
            other_pattern: "/{a}".into(),
            host: "\"*\" (any)".into(),
        }
    );
    let text = err.to_string();
    for needle in ["\"first\"", "\"second\"", "\"/{a}\"", "\"/{b}\""] {
        assert!(text.contains(needle), "{needle} not in: {text}");
    }

    let err = RouteTable::build(vec![
        RouteSpec {
            hosts: strs(&["api.example.com"]),
            paths: vec![pat("/users/{id}/x")],
            methods: vec![Method::GET],
            ..spec("get-user")
        },
        RouteSpec {
            hosts: strs(&["api.example.com"]),
            paths: vec![pat("/users/{uid}/x")],
            methods: vec![Method::DELETE],
            ..spec("delete-user")
        },
    ])
    .unwrap_err();
    assert!(
        matches!(&err, RouteError::PatternConflict { id, other_id, host, .. }
            if id == "delete-user" && other_id == "get-user" && host == "\"api.example.com\""),
        "{err}"
    );
}

#[test]
fn patterns_that_do_not_conflict() {
    let t = table(vec![
        // One pattern shared by several routes: one entry, no conflict.
        RouteSpec {
            paths: vec![pat("/users/{id}")],
            methods: vec![Method::GET],
            ..spec("get")
        },
        RouteSpec {
            paths: vec![pat("/users/{id}")],
            methods: vec![Method::DELETE],
            ..spec("delete")
        },
        // Same shape, other names, but on another host.
        RouteSpec {
            hosts: strs(&["a.example.com"]),
            paths: vec![pat("/users/{uid}")],
            ..spec("other-host")
        },
        // A single matchit router refuses these pairs; the rules order them.
        RouteSpec {
            paths: vec![pat("/files/{name}")],
            ..spec("file")
        },
        RouteSpec {
            paths: vec![pat("/files/{*rest}")],
            ..spec("files")
        },
        RouteSpec {
            paths: vec![pat("/img/a-{name}")],
            ..spec("a-img")
        },
        RouteSpec {
            paths: vec![pat("/img/{x}.jpg")],
            ..spec("jpg")
        },
        // Same shape, other names, but disjoint.
        RouteSpec {
            paths: vec![pat("/{a}/x")],
            ..spec("x")
        },
        // One matchit router misses `/ab/a` with these two (it does not
        // backtrack out of `{p}b`): they go to different layers.
        RouteSpec {
            paths: vec![pat("/{p}/a")],
            ..spec("plain-a")
        },
        RouteSpec {
            paths: vec![pat("/{p}b/b")],
            ..spec("suffixed-b")
        },
        RouteSpec {
            paths: vec![pat("/{b}/y")],
            ..spec("y")
        },
    ]);
    let none = HeaderMap::new();
    assert_eq!(
        find_with(&t, None, "/users/1", Method::DELETE, &none),
        some("delete")
    );
    assert_eq!(find(&t, None, "/users/1"), some("get"));
    assert_eq!(
        find(&t, Some("a.example.com"), "/users/1"),
        some("other-host")
    );
    assert_eq!(find(&t, None, "/files/a"), some("file"));
    assert_eq!(find(&t, None, "/files/a/b"), some("files"));
    assert_eq!(find(&t, None, "/img/a-b.jpg"), some("jpg"));
    assert_eq!(find(&t, None, "/img/a-b.png"), some("a-img"));
    assert_eq!(find(&t, None, "/img/b.jpg"), some("jpg"));
    assert_eq!(find(&t, None, "/q/x"), some("x"));
    assert_eq!(find(&t, None, "/q/y"), some("y"));
    assert_eq!(find(&t, None, "/ab/a"), some("plain-a"));
    assert_eq!(find(&t, None, "/ab/b"), some("suffixed-b"));
}

#[test]
fn every_problem_is_reported_with_its_route() {
    let errors = RouteTable::build_all(vec![
        spec("ok"),
        spec(""),
        spec("ok"),
        RouteSpec {
            hosts: strs(&[
                "a..example.com",
                "*.",
                "a*.example.com",
                "example.com:80",
                "[::zz]",
                "ex ample.com",
                "",
            ]),
            ..spec("hosts")
        },
        RouteSpec {
            paths: vec![exact("api"), prefix("/a?b"), pat("/{"), pat("/x/{*rest}/y")],
            ..spec("paths")
        },
    ])
    .unwrap_err();
    let summary: Vec<(usize, String)> = errors
        .iter()
        .map(|e| {
            let kind = match e {
                RouteError::EmptyId { .. } => "empty-id",
                RouteError::DuplicateId { .. } => "duplicate-id",
                RouteError::InvalidHost { .. } => "host",
                RouteError::InvalidPath { .. } => "path",
                RouteError::InvalidPattern { .. } => "pattern",
                RouteError::PatternConflict { .. } => "conflict",
            };
            (e.index(), kind.to_owned())
        })
        .collect();
    let want: Vec<(usize, String)> = [
        (1, "empty-id"),
        (2, "duplicate-id"),
        (3, "host"),
        (3, "host"),
        (3, "host"),
        (3, "host"),
        (3, "host"),
        (3, "host"),
        (3, "host"),
        (4, "path"),
        (4, "path"),
        (4, "pattern"),
        (4, "pattern"),
    ]
    .iter()
    .map(|(i, k)| (*i, (*k).to_owned()))
    .collect();
    assert_eq!(summary, want, "{errors:#?}");
    assert!(errors[1].to_string().contains("already used by route #0"));
    // `build` gives the first.
    let first = RouteTable::build(vec![spec("x"), spec("x")]).unwrap_err();
    assert_eq!(
        first,
        RouteError::DuplicateId {
            id: "x".into(),
            index: 1,
            first: 0
        }
    );
}

// ------------------------------------------------------- trait, swap, scale

#[test]
fn options_and_lookups_by_id() {
    let mut s = spec("r");
    Arc::make_mut(&mut s.options).max_body_bytes = Some(30);
    let t = table(vec![s]);
    let m = find_match(&t, None, "/");
    assert_eq!(m.route.spec().options.max_body_bytes, Some(30));
    assert_eq!(t.route("r").unwrap().index(), 0);
    assert_eq!(t.len(), 1);
    assert!(t.route("nope").is_none());
    let empty = RouteTable::empty();
    assert!(empty.is_empty());
    assert_eq!(find(&empty, Some("a"), "/"), None);
}

fn find_match(r: &dyn Resolver, host: Option<&str>, path: &str) -> Match {
    let h = HeaderMap::new();
    r.resolve(&RequestInfo::new(host, path, &Method::GET, &h))
        .unwrap()
}

/// Two tables with the same route ids where the other route wins and every
/// upstream names its table: a result mixing the two would pair a winner
/// with the other table's upstream.
fn generation(gen: &str, winner: usize) -> RouteTable {
    table(
        (0..2)
            .map(|i| RouteSpec {
                priority: if i == winner { 10 } else { 0 },
                hosts: strs(&["api.example.com"]),
                paths: vec![pat("/items/{id}")],
                ..RouteSpec::new(format!("r{i}"), format!("{gen}-r{i}"))
            })
            .collect(),
    )
}

#[test]
fn swap_under_concurrent_readers_never_mixes_tables() {
    let routes: Arc<dyn Resolver> = Arc::new(SwappableRoutes::new(generation("A", 0)));
    let swappable = Arc::new(SwappableRoutes::new(generation("A", 0)));
    let stop = Arc::new(AtomicBool::new(false));
    let seen = [Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0))];
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let r = Arc::clone(&swappable);
            let stop = Arc::clone(&stop);
            let seen = seen.clone();
            thread::spawn(move || {
                let h = HeaderMap::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) || n < 1000 {
                    let req =
                        RequestInfo::new(Some("api.example.com"), "/items/7", &Method::GET, &h);
                    let m = r.resolve(&req).expect("both tables route this");
                    match (m.route.id(), m.route.upstream()) {
                        ("r0", "A-r0") => seen[0].fetch_add(1, Ordering::Relaxed),
                        ("r1", "B-r1") => seen[1].fetch_add(1, Ordering::Relaxed),
                        other => panic!("mixed result {other:?}"),
                    };
                    assert_eq!(m.param("id"), Some("7"));
                    n += 1;
                }
            })
        })
        .collect();
    for i in 0..1000 {
        let next = if i % 2 == 0 {
            generation("B", 1)
        } else {
            generation("A", 0)
        };
        let old = swappable.swap(next);
        assert_eq!(old.len(), 2);
        if i % 100 == 0 {
            thread::yield_now();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().expect("reader panicked");
    }
    let (a, b) = (
        seen[0].load(Ordering::Relaxed),
        seen[1].load(Ordering::Relaxed),
    );
    assert!(a + b >= 4000, "{a} + {b}");
    // 1000 swaps leave the last one, generation A, in place.
    assert_eq!(
        find_match(&*swappable, Some("api.example.com"), "/items/1")
            .route
            .upstream(),
        "A-r0"
    );
    assert_eq!(swappable.snapshot().len(), 2);
    // The trait object and the blanket impl for Arc.
    assert_eq!(
        find_match(&routes, Some("api.example.com"), "/items/1")
            .route
            .upstream(),
        "A-r0"
    );
    assert_eq!(
        find(&routes, Some("api.example.com"), "/items/1"),
        some("r0")
    );
}

#[test]
fn ten_thousand_routes_build_and_resolve() {
    const N: usize = 10_000;
    let mut specs = Vec::with_capacity(N + 3);
    for i in 0..N {
        let s = match i % 5 {
            0 => RouteSpec {
                hosts: vec![format!("h{i}.example.com")],
                paths: vec![exact(&format!("/e{i}"))],
                ..spec(&format!("exact-{i}"))
            },
            1 => RouteSpec {
                hosts: vec![format!("*.w{i}.example.com")],
                paths: vec![pat(&format!("/svc{i}/{{id}}"))],
                ..spec(&format!("wild-{i}"))
            },
            2 => RouteSpec {
                paths: vec![prefix(&format!("/p{i}/"))],
                ..spec(&format!("prefix-{i}"))
            },
            3 => RouteSpec {
                paths: vec![pat(&format!("/api/v{i}/users/{{id}}"))],
                methods: vec![Method::GET],
                ..spec(&format!("pattern-{i}"))
            },
            _ => RouteSpec {
                paths: vec![pat(&format!("/t{i}/{{*rest}}"))],
                ..spec(&format!("catch-all-{i}"))
            },
        };
        specs.push(s);
    }
    // Overlapping patterns that need layers, and a last resort (no paths:
    // below every prefix; a `/{*all}` pattern would beat the prefixes).
    specs.push(RouteSpec {
        paths: vec![pat("/api/{version}/users/{id}")],
        ..spec("any-version")
    });
    specs.push(RouteSpec {
        paths: vec![pat("/t{n}/x/{*rest}")],
        ..spec("layered")
    });
    specs.push(spec("everything"));
    let start = Instant::now();
    let t = table(specs);
    let built = start.elapsed();
    let start = Instant::now();
    for i in 0..N {
        let (host, path, want) = match i % 5 {
            0 => (
                format!("h{i}.example.com"),
                format!("/e{i}"),
                format!("exact-{i}"),
            ),
            1 => (
                format!("x.w{i}.example.com"),
                format!("/svc{i}/9"),
                format!("wild-{i}"),
            ),
            2 => (
                "any.org".into(),
                format!("/p{i}/deep/er"),
                format!("prefix-{i}"),
            ),
            3 => (
                "any.org".into(),
                format!("/api/v{i}/users/9"),
                format!("pattern-{i}"),
            ),
            _ => (
                "any.org".into(),
                format!("/t{i}/a/b"),
                format!("catch-all-{i}"),
            ),
        };
        assert_eq!(find(&t, Some(&host), &path), Some(want), "{host}{path}");
    }
    let resolved = start.elapsed();
    let none = HeaderMap::new();
    assert_eq!(
        find_with(&t, None, "/api/v3/users/9", Method::POST, &none),
        some("any-version")
    );
    assert_eq!(find(&t, Some("nowhere.org"), "/zzz"), some("everything"));
    assert_eq!(find(&t, Some("nowhere.org"), "/tq/x/y"), some("layered"));
    eprintln!(
        "{} routes: built in {built:?}, {N} lookups in {resolved:?}",
        t.len()
    );
}

// ------------------------------------------- pattern layers against matchit

/// Small patterns and paths over a tiny alphabet, all pairs: the overlap
/// check never calls two patterns disjoint when a path matches both, and
/// the layers find exactly the patterns that match, as one matchit router
/// per pattern says.
#[test]
fn pattern_layers_find_every_match() {
    use super::pattern;

    const SEGS: [&str; 7] = ["a", "b", "ab", "{p}", "a{p}", "{p}b", ""];
    const TAILS: [&str; 2] = ["{*r}", "a{*r}"];
    // Up to three segments, parameters numbered by position, each prefix
    // also ending in a catch-all.
    let mut patterns: Vec<String> = Vec::new();
    let mut frontier = vec![String::new()];
    for depth in 1..=3 {
        let mut next = Vec::new();
        for base in &frontier {
            for seg in SEGS {
                let seg = seg.replace("{p}", &format!("{{p{depth}}}"));
                let p = format!("{base}/{seg}");
                patterns.push(p.clone());
                for tail in TAILS {
                    patterns.push(format!("{p}/{tail}"));
                }
                next.push(p);
            }
        }
        frontier = next;
    }
    patterns.sort();
    patterns.dedup();
    // Only patterns matchit takes on their own.
    let patterns: Vec<String> = patterns
        .into_iter()
        .filter(|p| matchit::Router::new().insert(p.as_str(), ()).is_ok())
        .collect();
    let singles: Vec<matchit::Router<()>> = patterns
        .iter()
        .map(|p| {
            let mut r = matchit::Router::new();
            r.insert(p.as_str(), ()).unwrap();
            r
        })
        .collect();

    const PATH_SEGS: [&str; 6] = ["a", "b", "ab", "aab", "abb", ""];
    let mut paths = vec!["/".to_owned()];
    let mut frontier = vec![String::new()];
    for _ in 1..=4 {
        let mut next = Vec::new();
        for base in &frontier {
            for seg in PATH_SEGS {
                let p = format!("{base}/{seg}");
                paths.push(p.clone());
                next.push(p);
            }
        }
        frontier = next;
    }

    let parsed: Vec<Vec<_>> = patterns.iter().map(|p| pattern::parse(p)).collect();
    let matching: Vec<Vec<usize>> = paths
        .iter()
        .map(|path| {
            (0..patterns.len())
                .filter(|&i| singles[i].at(path).is_ok())
                .collect()
        })
        .collect();
    for (path, ids) in paths.iter().zip(&matching) {
        for &a in ids {
            for &b in ids {
                assert!(
                    pattern::overlap(&parsed[a], &parsed[b]),
                    "{} and {} both match {path} but were called disjoint",
                    patterns[a],
                    patterns[b]
                );
            }
        }
    }

    // Several pattern sets (every k-th pattern, from several offsets).
    for (step, offset) in [(1, 0), (3, 1), (7, 2), (11, 5)] {
        let ids: Vec<usize> = (offset..patterns.len()).step_by(step).collect();
        let texts: Vec<&str> = ids.iter().map(|&i| patterns[i].as_str()).collect();
        let segs: Vec<Vec<_>> = ids.iter().map(|&i| parsed[i].clone()).collect();
        let layers = pattern::layers(&texts, &segs).unwrap();
        for (path, all) in paths.iter().zip(&matching) {
            let mut want: Vec<usize> = all
                .iter()
                .filter_map(|g| ids.iter().position(|i| i == g))
                .collect();
            let mut got: Vec<usize> = layers
                .iter()
                .filter_map(|layer| layer.at(path).ok().map(|m| *m.value))
                .collect();
            want.sort_unstable();
            got.sort_unstable();
            if got != want {
                let name = |v: &[usize]| v.iter().map(|&i| texts[i]).collect::<Vec<_>>();
                panic!(
                    "{path} in set {step}/{offset}: got {:?} want {:?}",
                    name(&got),
                    name(&want)
                );
            }
        }
        eprintln!(
            "{} patterns in {} layers (set {step}/{offset})",
            ids.len(),
            layers.len()
        );
    }
}

// ------------------------------------------------------- one-route tables

/// A table of one route without patterns is held as that route alone; it
/// must answer every request exactly as the general table does (compared
/// here with a table holding the same route and a decoy no request
/// reaches).
#[test]
fn a_one_route_table_answers_like_the_general_table() {
    use rand::{rngs::StdRng, Rng as _, SeedableRng as _};
    let mut rng = StdRng::seed_from_u64(0x0e_7ab1e);
    let hosts = ["a.test", "b.a.test", "*.a.test", "*", "A.Test.", "[::1]"];
    let paths = ["/", "/x", "/x/", "/x/y", "/xy", "*", "/y"];
    let req_hosts = [
        Some("a.test"),
        Some("b.a.test"),
        Some("c.a.test"),
        Some("c.b.a.test"),
        Some("other.test"),
        Some("[::1]"),
        None,
    ];
    let methods = [Method::GET, Method::POST, Method::OPTIONS];
    let mut ones = 0;
    let mut slot_hits = 0;
    for round in 0..3_000 {
        let mut s = spec("r");
        for _ in 0..rng.random_range(0..3) {
            s.hosts
                .push(hosts[rng.random_range(0..hosts.len())].to_owned());
        }
        for _ in 0..rng.random_range(0..4) {
            let p = paths[rng.random_range(0..paths.len())];
            s.paths.push(if rng.random_bool(0.5) && p != "*" {
                prefix(p)
            } else {
                exact(p)
            });
        }
        if rng.random_bool(0.3) {
            s.methods = vec![Method::GET];
        }
        if rng.random_bool(0.3) {
            s.headers = vec![header("x-a", HeaderValueMatch::Prefix("v".into()))];
        }
        s.priority = rng.random_range(-1..2);
        let one = table(vec![s.clone()]);
        assert!(
            one.is_one(),
            "round {round}: {s:?} was not held as one route"
        );
        ones += 1;
        let mut decoy = spec("decoy");
        decoy.hosts = strs(&["decoy.invalid"]);
        let full = table(vec![s.clone(), decoy]);
        assert!(!full.is_one());
        for _ in 0..20 {
            let host = req_hosts[rng.random_range(0..req_hosts.len())];
            let method = methods[rng.random_range(0..methods.len())].clone();
            let path = if method == Method::OPTIONS && rng.random_bool(0.3) {
                "*"
            } else {
                ["/", "/x", "/x/", "/x/y", "/xy", "/y", "/z"][rng.random_range(0..7)]
            };
            let mut headers = HeaderMap::new();
            if rng.random_bool(0.5) {
                headers.insert("x-a", HeaderValue::from_static("v1"));
            }
            let req = RequestInfo::new(host, path, &method, &headers);
            let a = one
                .resolve(&req)
                .map(|m| (m.route.id().to_owned(), m.path_index));
            let b = full
                .resolve(&req)
                .map(|m| (m.route.id().to_owned(), m.path_index));
            assert_eq!(
                a, b,
                "round {round}: {s:?}, request {host:?} {method} {path}"
            );
            // Reached through the request's own host slot, the host check
            // is skipped; the answer must not change.
            let slots = HostSlot::of_route(&s.hosts).unwrap_or_default();
            let in_slot = host.is_some_and(|h| {
                slots.contains(&HostSlot::Exact(h.to_owned()))
                    || wildcard_suffix(h)
                        .is_some_and(|w| slots.contains(&HostSlot::Wildcard(w.to_owned())))
            });
            if in_slot {
                let c = one
                    .resolve_in_host_slot(&req)
                    .map(|m| (m.route.id().to_owned(), m.path_index));
                assert_eq!(
                    c, b,
                    "round {round}: {s:?}, in its slot: {host:?} {method} {path}"
                );
                slot_hits += 1;
            }
        }
        assert_eq!(one.len(), 1);
        assert!(one.route("r").is_some() && one.route("decoy").is_none());
    }
    assert_eq!(ones, 3_000);
    assert!(slot_hits > 1_000, "only {slot_hits} requests in their slot");
    // A route with a pattern keeps the general form (params, layers).
    let mut p = spec("p");
    p.paths = vec![pat("/u/{id}")];
    assert!(!table(vec![p]).is_one());
}
