//! `aggregate.base.pagination` as written becomes the [`Pagination`] each mode needs, with the
//! defaults filled in.

use std::path::Path;

use sluice_config::{PageMode, PageSize, Pagination};

#[test]
fn each_pagination_mode_loads_with_its_fields_and_the_default_bounds() {
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/valid/aggregate_pagination");
    let config = sluice_config::load(&dir.join("worker.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let pagination = |id: &str| {
        let target = config
            .targets
            .iter()
            .find(|t| t.id.as_str() == id)
            .unwrap_or_else(|| panic!("target {id}"));
        target
            .aggregate
            .as_ref()
            .unwrap_or_else(|| panic!("{id} is aggregated"))
            .pagination
            .clone()
    };
    let defaults = |mode| Pagination {
        mode,
        max_pages: Pagination::DEFAULT_MAX_PAGES,
        max_bytes: Pagination::DEFAULT_MAX_BYTES,
    };
    assert_eq!(
        pagination("body"),
        Some(defaults(PageMode::NextLink {
            pointer: "/links/next".to_owned()
        }))
    );
    assert_eq!(
        pagination("header"),
        Some(Pagination {
            mode: PageMode::LinkHeader,
            max_pages: 50,
            max_bytes: 1_048_576,
        })
    );
    assert_eq!(
        pagination("cursor"),
        Some(defaults(PageMode::Cursor {
            pointer: "/next_cursor".to_owned(),
            param: "cursor".to_owned(),
        }))
    );
    assert_eq!(
        pagination("page"),
        Some(defaults(PageMode::Page {
            param: "page".to_owned(),
            first: 0,
            size: Some(PageSize {
                param: "per_page".to_owned(),
                size: 200,
            }),
        }))
    );
    assert_eq!(
        pagination("offset"),
        Some(defaults(PageMode::Offset {
            param: "offset".to_owned(),
            size: None,
        }))
    );
    assert_eq!(pagination("single"), None, "one document unless configured");
}
