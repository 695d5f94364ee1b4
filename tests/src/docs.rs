//! Rule documents the end-to-end tests apply, and helpers to read results back.

use crate::ControlPlane;

/// Lane `gray`: tag gray, instances labelled version=v2.
pub const LANE: &str = "apiVersion: graylane.io/v1
kind: Lane
metadata:
  name: gray
spec:
  tag: gray
  selector:
    version: v2
";

/// RoutePolicy `orders`: subsets v1/v2, default weights 90/10.
pub const POLICY: &str = "apiVersion: graylane.io/v1
kind: RoutePolicy
metadata:
  name: orders
spec:
  service: orders
  subsets:
    - name: v1
      labels: {version: v1}
    - name: v2
      labels: {version: v2}
  default:
    - {subset: v1, weight: 90}
    - {subset: v2, weight: 10}
";

/// Lane `blue`: tag blue, instances labelled version=v3.
pub const BLUE: &str = "apiVersion: graylane.io/v1
kind: Lane
metadata:
  name: blue
spec:
  tag: blue
  selector:
    version: v3
";

/// "Kind/name" of every item of `graylane rules get -o json`.
pub fn names(get_json: &serde_json::Value) -> Vec<String> {
    get_json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            format!(
                "{}/{}",
                i["kind"].as_str().unwrap(),
                i["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

/// The revision in force, read through the CLI.
pub fn revision(cp: &ControlPlane) -> u64 {
    cp.cli(&["rules", "get", "-o", "json"]).assert_ok().json()["revision"]
        .as_u64()
        .unwrap()
}
