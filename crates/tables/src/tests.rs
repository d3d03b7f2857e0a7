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
    }
}

fn item(pk: &str, sk: &str) -> Item {
    let mut i = Item::new();
    i.insert("pk".into(), Value::S(pk.into()));
    i.insert("sk".into(), Value::N(Number::parse(sk).unwrap()));
    i
}

async fn put(store: &TableStore, table: &TableRecord, i: Item) -> Written {
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
