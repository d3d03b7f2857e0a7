use std::ops::Bound;

use super::*;
use crate::value::{Number, Value};

fn spec(name: &str) -> TableSpec {
    TableSpec {
        name: name.into(),
        key: KeySchema {
            hash: KeyAttr {
                name: "pk".into(),
                kind: KeyType::S,
            },
            range: Some(KeyAttr {
                name: "sk".into(),
                kind: KeyType::N,
            }),
        },
        attributes: vec![("pk".into(), KeyType::S), ("sk".into(), KeyType::N)],
        billing_mode: "PAY_PER_REQUEST".into(),
        throughput: None,
        indexes: Vec::new(),
    }
}

fn item(pk: &str, sk: &str) -> Item {
    let mut i = Item::new();
    i.insert("pk".into(), Value::S(pk.into()));
    i.insert("sk".into(), Value::N(Number::parse(sk).unwrap()));
    i
}

async fn put(store: &TableStore, table: &Arc<TableRecord>, i: Item) -> Written {
    let key = table.spec.key.key_of(&i).unwrap();
    store
        .write(table, key, Box::new(move |_| Ok(Some(i))))
        .await
        .unwrap()
}

fn sks(page: &Page) -> Vec<String> {
    page.items
        .iter()
        .map(|i| match &i["sk"] {
            Value::N(n) => n.to_string(),
            _ => unreachable!(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_are_read_back_in_key_order_by_partition() {
    let dir = tempfile::tempdir().unwrap();
    let store = TableStore::open(dir.path(), "us-east-1").unwrap();
    let t = store
        .create_table("111111111111", spec("orders"))
        .await
        .unwrap();
    assert!(matches!(
        store.create_table("111111111111", spec("orders")).await,
        Err(Error::ResourceInUse(_))
    ));
    for sk in ["10", "-2", "3.5", "100", "0", "2"] {
        put(&store, &t, item("a", sk)).await;
    }
    put(&store, &t, item("b", "1")).await;
    put(&store, &t, item("a\u{0}", "1")).await;
    let partition = |p: &str| ReadRange {
        partition: Some(p.as_bytes().to_vec()),
        ..Default::default()
    };
    let all = store.read(&t, &partition("a")).unwrap();
    assert_eq!(sks(&all), ["-2", "0", "2", "3.5", "10", "100"]);
    assert!(all.last.is_none());
    let between = ReadRange {
        lower: Bound::Included(Number::parse("2").unwrap().key_bytes()),
        upper: Bound::Excluded(Number::parse("100").unwrap().key_bytes()),
        ..partition("a")
    };
    assert_eq!(sks(&store.read(&t, &between).unwrap()), ["2", "3.5", "10"]);
    let back = ReadRange {
        forward: false,
        limit: Some(2),
        ..partition("a")
    };
    let first = store.read(&t, &back).unwrap();
    assert_eq!(sks(&first), ["100", "10"]);
    let last = first.last.clone().unwrap();
    let rest = ReadRange {
        after: Some(t.spec.key.key_of(&last).unwrap()),
        ..back.clone()
    };
    assert_eq!(sks(&store.read(&t, &rest).unwrap()), ["3.5", "2"]);
    // A scan sees every partition; segments split it without overlap.
    assert_eq!(
        store.read(&t, &ReadRange::default()).unwrap().items.len(),
        8
    );
    let mut total = 0;
    for s in 0..4 {
        total += store
            .read(
                &t,
                &ReadRange {
                    segment: Some((s, 4)),
                    ..Default::default()
                },
            )
            .unwrap()
            .items
            .len();
    }
    assert_eq!(total, 8);
    assert_eq!(store.stats(&t).unwrap().0, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_change_writes_nothing_and_a_deleted_table_takes_its_items() {
    let dir = tempfile::tempdir().unwrap();
    let store = TableStore::open(dir.path(), "us-east-1").unwrap();
    let t = store
        .create_table("111111111111", spec("things"))
        .await
        .unwrap();
    put(&store, &t, item("a", "1")).await;
    let key = t.spec.key.key_of(&item("a", "1")).unwrap();
    let refused = store
        .write(
            &t,
            key.clone(),
            Box::new(|old| Err(Error::ConditionalCheckFailed(old.cloned().map(Box::new)))),
        )
        .await;
    assert!(matches!(
        refused,
        Err(Error::ConditionalCheckFailed(Some(_)))
    ));
    assert!(store.get(&t, &key).unwrap().is_some());
    let gone = store
        .write(&t, key.clone(), Box::new(|_| Ok(None)))
        .await
        .unwrap();
    assert!(gone.old.is_some() && gone.new.is_none());
    assert_eq!(store.stats(&t).unwrap(), (0, 0));
    put(&store, &t, item("b", "2")).await;
    store.delete_table("111111111111", "things").await.unwrap();
    assert!(matches!(
        store.table("111111111111", "things"),
        Err(Error::ResourceNotFound(_))
    ));
    // The name can be used again at once, empty.
    let again = store
        .create_table("111111111111", spec("things"))
        .await
        .unwrap();
    assert_ne!(again.id, t.id);
    assert!(
        store
            .read(&again, &ReadRange::default())
            .unwrap()
            .items
            .is_empty()
    );
    assert!(matches!(
        store.write(&t, key, Box::new(|_| Ok(None))).await,
        Err(Error::ResourceNotFound(_))
    ));
    // Tables and items survive a restart.
    put(&store, &again, item("c", "3")).await;
    store.shutdown();
    drop(store);
    let store = TableStore::open(dir.path(), "us-east-1").unwrap();
    let t = store.table("111111111111", "things").unwrap();
    assert_eq!(
        store.read(&t, &ReadRange::default()).unwrap().items.len(),
        1
    );
    assert_eq!(
        store.list_tables("111111111111", None, 10).unwrap(),
        (vec!["things".to_owned()], false)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_items_are_swept_once_their_time_has_passed() {
    let dir = tempfile::tempdir().unwrap();
    let store = TableStore::open(dir.path(), "us-east-1").unwrap();
    let t = store
        .create_table("111111111111", spec("sessions"))
        .await
        .unwrap();
    let with_expiry = |sk: &str, exp: Option<&str>| {
        let mut i = item("s", sk);
        if let Some(e) = exp {
            i.insert("exp".into(), Value::N(Number::parse(e).unwrap()));
        }
        i
    };
    // Written before time to live is on: indexed when it is turned on.
    put(&store, &t, with_expiry("1", Some("100"))).await;
    store
        .set_ttl("111111111111", "sessions", Some("exp".into()))
        .await
        .unwrap();
    assert!(matches!(
        store
            .set_ttl("111111111111", "sessions", Some("exp".into()))
            .await,
        Err(Error::Validation(_))
    ));
    let t = store.table("111111111111", "sessions").unwrap();
    put(&store, &t, with_expiry("2", Some("200"))).await;
    put(&store, &t, with_expiry("3", None)).await;
    let mut odd = with_expiry("4", None);
    odd.insert("exp".into(), Value::S("soon".into()));
    put(&store, &t, odd).await;
    let gone = store.sweep(150, 100).await.unwrap();
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].1["sk"], Value::N(Number::parse("1").unwrap()));
    // An item whose expiry moved later stays until then.
    put(&store, &t, with_expiry("2", Some("300"))).await;
    assert!(store.sweep(250, 100).await.unwrap().is_empty());
    assert_eq!(store.sweep(300, 100).await.unwrap().len(), 1);
    assert_eq!(
        store.read(&t, &ReadRange::default()).unwrap().items.len(),
        2
    );
    store
        .set_ttl("111111111111", "sessions", None)
        .await
        .unwrap();
    let t = store.table("111111111111", "sessions").unwrap();
    put(&store, &t, with_expiry("5", Some("1"))).await;
    assert!(store.sweep(u64::MAX / 2, 100).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexes_follow_every_write_and_leave_out_items_without_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = TableStore::open(dir.path(), "us-east-1").unwrap();
    let mut s = spec("orders");
    s.indexes.push(IndexSpec {
        name: "by-status".into(),
        id: 0,
        global: true,
        key: KeySchema {
            hash: KeyAttr {
                name: "status".into(),
                kind: KeyType::S,
            },
            range: Some(KeyAttr {
                name: "total".into(),
                kind: KeyType::N,
            }),
        },
        projection: Projection::KeysOnly,
        throughput: None,
    });
    let t = store.create_table("111111111111", s).await.unwrap();
    let index = t.spec.indexes[0].clone();
    assert_ne!(index.id, t.id);
    let order = |sk: &str, status: Option<&str>, total: &str| {
        let mut i = item("c1", sk);
        if let Some(st) = status {
            i.insert("status".into(), Value::S(st.into()));
        }
        i.insert("total".into(), Value::N(Number::parse(total).unwrap()));
        i.insert("note".into(), Value::S("kept out of the index".into()));
        i
    };
    put(&store, &t, order("1", Some("open"), "30")).await;
    put(&store, &t, order("2", Some("open"), "5")).await;
    put(&store, &t, order("3", Some("open"), "30")).await;
    put(&store, &t, order("4", Some("shipped"), "7")).await;
    put(&store, &t, order("5", None, "1")).await;
    let open = |lower: Bound<Vec<u8>>, upper: Bound<Vec<u8>>| ReadRange {
        partition: Some(b"open".to_vec()),
        lower,
        upper,
        index: Some(index.clone()),
        ..Default::default()
    };
    let n = |x: &str| Number::parse(x).unwrap().key_bytes();
    let all = store
        .read(&t, &open(Bound::Unbounded, Bound::Unbounded))
        .unwrap();
    assert_eq!(sks(&all), ["2", "1", "3"]);
    assert!(
        all.items
            .iter()
            .all(|i| !i.contains_key("note") && i.contains_key("status"))
    );
    let exactly = store
        .read(
            &t,
            &open(Bound::Included(n("30")), Bound::Included(n("30"))),
        )
        .unwrap();
    assert_eq!(sks(&exactly), ["1", "3"]);
    let above = store
        .read(&t, &open(Bound::Excluded(n("5")), Bound::Unbounded))
        .unwrap();
    assert_eq!(sks(&above), ["1", "3"]);
    let below = store
        .read(&t, &open(Bound::Unbounded, Bound::Excluded(n("30"))))
        .unwrap();
    assert_eq!(sks(&below), ["2"]);
    // Paging through an index resumes after the entry, even among equal index keys.
    let first = store
        .read(
            &t,
            &ReadRange {
                limit: Some(2),
                ..open(Bound::Unbounded, Bound::Unbounded)
            },
        )
        .unwrap();
    let last = first.last.unwrap();
    assert!(last.contains_key("status") && last.contains_key("total"));
    let base = t.spec.key.key_of(&last).unwrap();
    let rest = store
        .read(
            &t,
            &ReadRange {
                after: index.entry_key(&base, &last),
                ..open(Bound::Unbounded, Bound::Unbounded)
            },
        )
        .unwrap();
    assert_eq!(sks(&rest), ["3"]);
    // A change of status moves the entry; a delete removes it.
    put(&store, &t, order("1", Some("shipped"), "30")).await;
    let key = t.spec.key.key_of(&item("c1", "3")).unwrap();
    store.write(&t, key, Box::new(|_| Ok(None))).await.unwrap();
    assert_eq!(
        sks(&store
            .read(&t, &open(Bound::Unbounded, Bound::Unbounded))
            .unwrap()),
        ["2"]
    );
    let scan = store
        .read(
            &t,
            &ReadRange {
                index: Some(index.clone()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(scan.items.len(), 3);
    store.delete_table("111111111111", "orders").await.unwrap();
    assert!(
        store
            .read(
                &t,
                &ReadRange {
                    index: Some(index),
                    ..Default::default()
                }
            )
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_stream_records_each_real_change_in_the_same_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = TableStore::open(dir.path(), "us-east-1").unwrap();
    store
        .create_table("111111111111", spec("log"))
        .await
        .unwrap();
    let t = store
        .set_stream("111111111111", "log", Some(StreamView::NewImage))
        .await
        .unwrap();
    assert!(
        store
            .set_stream("111111111111", "log", Some(StreamView::KeysOnly))
            .await
            .is_err()
    );
    let stream = t.live_stream().unwrap().clone();
    let mut one = item("a", "1");
    put(&store, &t, one.clone()).await;
    put(&store, &t, one.clone()).await; // the same item: no record
    one.insert("v".into(), Value::S("x".into()));
    put(&store, &t, one).await;
    let key = t.spec.key.key_of(&item("a", "1")).unwrap();
    store.write(&t, key, Box::new(|_| Ok(None))).await.unwrap();
    let records = store.stream_records(stream.id, 0, 100).unwrap();
    let names: Vec<&str> = records
        .iter()
        .map(|(_, r)| r["eventName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["INSERT", "MODIFY", "REMOVE"]);
    assert_eq!(
        records[1].1["dynamodb"]["NewImage"]["v"],
        serde_json::json!({"S": "x"})
    );
    assert!(records[1].1["dynamodb"].get("OldImage").is_none());
    assert!(records[0].0 < records[1].0 && records[1].0 < records[2].0);
    assert_eq!(
        store.stream_records(stream.id, records[0].0, 1).unwrap()[0].0,
        records[1].0
    );
    assert_eq!(
        store.stream_bounds(stream.id).unwrap(),
        Some((records[0].0, records[2].0))
    );
    // Off: no more records, and the old ones stay readable until trimmed.
    let t = store.set_stream("111111111111", "log", None).await.unwrap();
    put(&store, &t, item("b", "2")).await;
    assert_eq!(store.stream_records(stream.id, 0, 100).unwrap().len(), 3);
    assert_eq!(
        store
            .trim_streams(nimbus_types::time::now_ms(), 100)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .trim_streams(nimbus_types::time::now_ms() + STREAM_RETENTION_MS + 1, 100)
            .await
            .unwrap(),
        3
    );
}
