use super::*;

type Chunk = Result<Bytes, std::io::Error>;

fn body(data: &[u8], chunk: usize) -> impl Stream<Item = Chunk> + Unpin {
    let chunks: Vec<Chunk> = data
        .chunks(chunk.max(1))
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures_util::stream::iter(chunks)
}

async fn put(o: &Objects, bucket: &str, key: &str, data: &[u8]) -> ObjectRecord {
    let staged = o
        .stage(
            body(data, 7000),
            Wanted::default(),
            Some(data.len() as u64),
            MAX_PUT_BYTES,
        )
        .await
        .unwrap();
    o.put(
        bucket,
        key,
        staged,
        NewObject::default(),
        WriteConditions::default(),
        &Actor::default(),
    )
    .await
    .unwrap()
}

async fn read(o: &Objects, bucket: &str, key: &str, range: Option<ByteRange>) -> Vec<u8> {
    let mut opened = o
        .open_object(bucket, key, None, &ReadConditions::default(), range, None)
        .unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = opened.body.next_chunk().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

fn blob_files(dir: &Path) -> usize {
    BlobDir {
        root: dir.join("blobs"),
    }
    .scan()
    .unwrap()
    .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_and_large_objects_round_trip_and_replacing_frees_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let o = Objects::open(dir.path()).unwrap();
    o.create_bucket("111111111111", "photos", "us-east-1")
        .await
        .unwrap();
    let small = put(&o, "photos", "a.txt", b"hello").await;
    assert_eq!(small.etag, "5d41402abc4b2a76b9719d911017c592");
    assert_eq!(read(&o, "photos", "a.txt", None).await, b"hello");
    assert_eq!(
        blob_files(dir.path()),
        0,
        "small bodies stay in the metadata file"
    );

    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    put(&o, "photos", "big.bin", &big).await;
    assert_eq!(blob_files(dir.path()), 1);
    assert_eq!(read(&o, "photos", "big.bin", None).await, big);
    let ranged = read(
        &o,
        "photos",
        "big.bin",
        Some(ByteRange::From {
            first: 1_000_000,
            last: Some(1_600_000),
        }),
    )
    .await;
    assert_eq!(ranged, &big[1_000_000..=1_600_000]);
    let tail = read(&o, "photos", "big.bin", Some(ByteRange::Suffix(10))).await;
    assert_eq!(tail, &big[big.len() - 10..]);
    assert!(matches!(
        o.open_object(
            "photos",
            "big.bin",
            None,
            &ReadConditions::default(),
            Some(ByteRange::From {
                first: big.len() as u64,
                last: None
            }),
            None
        ),
        Err(Error::InvalidRange { .. })
    ));

    // A reader holding the old body keeps it whole while the key is replaced.
    let mut old = o
        .open_object(
            "photos",
            "big.bin",
            None,
            &ReadConditions::default(),
            None,
            None,
        )
        .unwrap();
    put(&o, "photos", "big.bin", b"now small").await;
    assert_eq!(
        blob_files(dir.path()),
        0,
        "the replaced body's file is gone"
    );
    let mut got = Vec::new();
    while let Some(c) = old.body.next_chunk().await {
        got.extend_from_slice(&c.unwrap());
    }
    assert_eq!(got, big);
    assert_eq!(read(&o, "photos", "big.bin", None).await, b"now small");

    o.delete("photos", "big.bin", None, &Actor::default())
        .await
        .unwrap();
    o.delete("photos", "never-there", None, &Actor::default())
        .await
        .unwrap();
    assert!(matches!(
        o.head("photos", "big.bin", None),
        Err(Error::NoSuchKey)
    ));
    assert!(matches!(
        o.delete_bucket("photos").await,
        Err(Error::BucketNotEmpty)
    ));
    o.delete("photos", "a.txt", None, &Actor::default())
        .await
        .unwrap();
    o.delete_bucket("photos").await.unwrap();
    assert!(matches!(
        o.head("photos", "a.txt", None),
        Err(Error::NoSuchBucket)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_belong_to_one_account_and_names_are_global() {
    let dir = tempfile::tempdir().unwrap();
    let o = Objects::open(dir.path()).unwrap();
    o.create_bucket("111111111111", "shared-name", "us-east-1")
        .await
        .unwrap();
    assert!(matches!(
        o.create_bucket("111111111111", "shared-name", "us-east-1")
            .await,
        Err(Error::BucketAlreadyOwnedByYou)
    ));
    assert!(matches!(
        o.create_bucket("222222222222", "shared-name", "us-east-1")
            .await,
        Err(Error::BucketAlreadyExists)
    ));
    assert!(matches!(
        o.create_bucket("111111111111", "Bad_Name", "us-east-1")
            .await,
        Err(Error::InvalidBucketName(_))
    ));
    assert_eq!(o.buckets_of("111111111111").unwrap().len(), 1);
    assert!(o.buckets_of("222222222222").unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_rolls_up_common_prefixes_and_pages_without_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let o = Objects::open(dir.path()).unwrap();
    o.create_bucket("111111111111", "b1b", "us-east-1")
        .await
        .unwrap();
    let keys = [
        "a/1",
        "a/2",
        "a/3",
        "b",
        "c/x/1",
        "c/y",
        "d",
        "z/",
        "z/deeper/1",
        "é",
    ];
    for k in keys {
        put(&o, "b1b", k, k.as_bytes()).await;
    }
    let all = o
        .list(
            "b1b",
            &ListQuery {
                max: 1000,
                ..Default::default()
            },
        )
        .unwrap();
    let listed: Vec<&str> = all.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(listed, keys, "byte order of UTF-8");

    let rolled = o
        .list(
            "b1b",
            &ListQuery {
                delimiter: Some("/".into()),
                max: 1000,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(rolled.common_prefixes, ["a/", "c/", "z/"]);
    let plain: Vec<&str> = rolled.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(plain, ["b", "d", "é"]);

    // Two at a time, with the delimiter: every entry once, in order.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = o
            .list(
                "b1b",
                &ListQuery {
                    delimiter: Some("/".into()),
                    after: after.clone(),
                    max: 2,
                    ..Default::default()
                },
            )
            .unwrap();
        for p in &page.common_prefixes {
            seen.push(p.clone());
        }
        for obj in &page.objects {
            seen.push(obj.key.clone());
        }
        if !page.truncated {
            break;
        }
        after = page.last.clone();
    }
    seen.sort();
    assert_eq!(seen, ["a/", "b", "c/", "d", "z/", "é"]);

    let under_c = o
        .list(
            "b1b",
            &ListQuery {
                prefix: "c/".into(),
                delimiter: Some("/".into()),
                max: 1000,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(under_c.common_prefixes, ["c/x/"]);
    assert_eq!(under_c.objects.len(), 1);
    assert_eq!(under_c.objects[0].key, "c/y");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_follow_s3() {
    let dir = tempfile::tempdir().unwrap();
    let o = Objects::open(dir.path()).unwrap();
    o.create_bucket("111111111111", "cond", "us-east-1")
        .await
        .unwrap();
    let rec = put(&o, "cond", "k", b"v1").await;
    let open = |c: ReadConditions| o.open_object("cond", "k", None, &c, None, None).map(|_| ());
    assert!(
        open(ReadConditions {
            if_match: Some(EtagMatch::Tags(vec![rec.etag.clone()])),
            ..Default::default()
        })
        .is_ok()
    );
    assert!(matches!(
        open(ReadConditions {
            if_match: Some(EtagMatch::Tags(vec!["nope".into()])),
            ..Default::default()
        }),
        Err(Error::PreconditionFailed)
    ));
    assert!(matches!(
        open(ReadConditions {
            if_none_match: Some(EtagMatch::Any),
            ..Default::default()
        }),
        Err(Error::NotModified(_))
    ));
    assert!(matches!(
        open(ReadConditions {
            if_modified_since_ms: Some(rec.last_modified_ms + 5_000),
            ..Default::default()
        }),
        Err(Error::NotModified(_))
    ));
    // If-Match holding wins over If-Unmodified-Since failing.
    assert!(
        open(ReadConditions {
            if_match: Some(EtagMatch::Any),
            if_unmodified_since_ms: Some(rec.last_modified_ms - 60_000),
            ..Default::default()
        })
        .is_ok()
    );

    let staged = o
        .stage(body(b"v2", 2), Wanted::default(), None, MAX_PUT_BYTES)
        .await
        .unwrap();
    assert!(matches!(
        o.put(
            "cond",
            "k",
            staged,
            NewObject::default(),
            WriteConditions {
                if_none_match_any: true,
                ..Default::default()
            },
            &Actor::default(),
        )
        .await,
        Err(Error::PreconditionFailed)
    ));
    assert_eq!(read(&o, "cond", "k", None).await, b"v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_uploads_complete_into_one_object() {
    let dir = tempfile::tempdir().unwrap();
    let o = Objects::open(dir.path()).unwrap();
    o.create_bucket("111111111111", "mpu", "us-east-1")
        .await
        .unwrap();
    let upload = |key: &str| UploadRecord {
        bucket: "mpu".into(),
        key: key.into(),
        initiated_ms: 0,
        initiator: "arn:aws:iam::111111111111:root".into(),
        headers: ContentHeaders::default(),
        metadata: Default::default(),
        tags: Vec::new(),
        checksum_algorithm: Some(ChecksumAlgorithm::Crc32),
        checksum_kind: ChecksumKind::FullObject,
    };
    let id = o.create_upload(upload("big")).await.unwrap();
    let p1: Vec<u8> = vec![1u8; MIN_PART_BYTES as usize];
    let p2: Vec<u8> = b"the end".to_vec();
    let wanted = Wanted {
        checksum: Some(ChecksumAlgorithm::Crc32),
    };
    let mut etags = Vec::new();
    for (n, data) in [(1u32, &p1), (2, &p2)] {
        let staged = o
            .stage(body(data, 65536), wanted, None, MAX_PART_BYTES)
            .await
            .unwrap();
        etags.push(o.put_part("mpu", "big", &id, n, staged).await.unwrap().etag);
    }
    let (parts, more) = o.parts("mpu", "big", &id, 0, 1000).unwrap();
    assert_eq!(parts.len(), 2);
    assert!(!more);
    // Out of order, and a wrong ETag, are refused.
    let list = |a: u32, b: u32| {
        vec![
            CompletedPart {
                number: a,
                etag: etags[(a - 1) as usize].clone(),
                checksum: None,
            },
            CompletedPart {
                number: b,
                etag: etags[(b - 1) as usize].clone(),
                checksum: None,
            },
        ]
    };
    assert!(matches!(
        o.complete_upload(
            "mpu",
            "big",
            &id,
            list(2, 1),
            WriteConditions::default(),
            &Actor::default()
        )
        .await,
        Err(Error::InvalidPartOrder)
    ));
    let mut wrong = list(1, 2);
    wrong[1].etag = "0".repeat(32);
    assert!(matches!(
        o.complete_upload(
            "mpu",
            "big",
            &id,
            wrong,
            WriteConditions::default(),
            &Actor::default()
        )
        .await,
        Err(Error::InvalidPart(_))
    ));
    let done = o
        .complete_upload(
            "mpu",
            "big",
            &id,
            list(1, 2),
            WriteConditions::default(),
            &Actor::default(),
        )
        .await
        .unwrap();
    assert!(done.etag.ends_with("-2"), "{}", done.etag);
    let whole = [p1.clone(), p2.clone()].concat();
    assert_eq!(read(&o, "mpu", "big", None).await, whole);
    // The combined CRC is the whole object's.
    let mut h = digest::Hasher::new(wanted);
    h.update(&whole);
    assert_eq!(
        done.checksum.unwrap().value,
        h.finish().checksum.unwrap().value
    );
    assert!(matches!(
        o.parts("mpu", "big", &id, 0, 1000),
        Err(Error::NoSuchUpload)
    ));
    let second = o
        .open_object(
            "mpu",
            "big",
            None,
            &ReadConditions::default(),
            None,
            Some(2),
        )
        .unwrap();
    assert_eq!(
        second.range,
        Some((p1.len() as u64, whole.len() as u64 - 1))
    );

    // A small part that is not the last is refused; an aborted upload frees its files.
    let id2 = o.create_upload(upload("small")).await.unwrap();
    for n in 1..=2u32 {
        let staged = o
            .stage(body(b"tiny", 4), wanted, None, MAX_PART_BYTES)
            .await
            .unwrap();
        o.put_part("mpu", "small", &id2, n, staged).await.unwrap();
    }
    let tiny = o.parts("mpu", "small", &id2, 0, 10).unwrap().0;
    let listed: Vec<CompletedPart> = tiny
        .iter()
        .map(|(n, p)| CompletedPart {
            number: *n,
            etag: p.etag.clone(),
            checksum: None,
        })
        .collect();
    assert!(matches!(
        o.complete_upload(
            "mpu",
            "small",
            &id2,
            listed,
            WriteConditions::default(),
            &Actor::default()
        )
        .await,
        Err(Error::EntityTooSmall)
    ));
    let files_before = blob_files(dir.path());
    let id3 = o.create_upload(upload("aborted")).await.unwrap();
    let staged = o
        .stage(body(&p1, 65536), wanted, None, MAX_PART_BYTES)
        .await
        .unwrap();
    o.put_part("mpu", "aborted", &id3, 1, staged).await.unwrap();
    assert_eq!(blob_files(dir.path()), files_before + 1);
    o.abort_upload("mpu", "aborted", &id3).await.unwrap();
    assert_eq!(blob_files(dir.path()), files_before);
    let (uploads, _) = o.uploads("mpu", "", "", "", 100).unwrap();
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].0, "small");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_share_files_and_leftovers_are_swept_at_start() {
    let dir = tempfile::tempdir().unwrap();
    {
        let o = Objects::open(dir.path()).unwrap();
        o.create_bucket("111111111111", "src", "us-east-1")
            .await
            .unwrap();
        let big = vec![7u8; 200_000];
        put(&o, "src", "orig", &big).await;
        let copied = o
            .copy(
                "src",
                "orig",
                None,
                &ReadConditions::default(),
                "src",
                "copy",
                MetadataDirective::Copy,
                WriteConditions::default(),
                &Actor::default(),
            )
            .await
            .unwrap();
        assert_eq!(copied.size, 200_000);
        assert_eq!(blob_files(dir.path()), 2);
        o.delete("src", "orig", None, &Actor::default())
            .await
            .unwrap();
        assert_eq!(read(&o, "src", "copy", None).await, big);
        // A body staged but never committed, as a crash would leave it.
        let staged = o
            .stage(body(&big, 4096), Wanted::default(), None, MAX_PUT_BYTES)
            .await
            .unwrap();
        std::mem::forget(staged);
        assert_eq!(blob_files(dir.path()), 2);
        o.shutdown();
    }
    let o = Objects::open(dir.path()).unwrap();
    assert_eq!(
        blob_files(dir.path()),
        1,
        "the uncommitted file was removed"
    );
    assert_eq!(read(&o, "src", "copy", None).await.len(), 200_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_or_short_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let o = Objects::open(dir.path()).unwrap();
    let over = o
        .stage(body(&[0u8; 100_000], 1000), Wanted::default(), None, 50_000)
        .await;
    assert!(matches!(over, Err(Error::EntityTooLarge(50_000))));
    assert_eq!(blob_files(dir.path()), 0, "the partial file was removed");
    let staged = o
        .stage(body(b"abc", 1), Wanted::default(), None, 100)
        .await
        .unwrap();
    assert!(matches!(
        staged.digests.check(&Expected {
            length: Some(10),
            ..Default::default()
        }),
        Err(Error::IncompleteBody { .. })
    ));
}

struct AnyTarget;

impl Targets for AnyTarget {
    fn check(&self, _owner: &str, target: &Target) -> Result<(), String> {
        if target.arn().ends_with(":missing") {
            Err("no such target".into())
        } else {
            Ok(())
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_leave_their_notifications_in_the_outbox_until_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let o = Objects::open(dir.path()).unwrap();
    o.create_bucket("111111111111", "events", "us-east-1")
        .await
        .unwrap();
    let queue = "arn:aws:sqs:us-east-1:111111111111:q".to_owned();
    let rules = vec![
        NotificationRule {
            id: "uploads".into(),
            target: Target::Queue(queue.clone()),
            events: vec!["s3:ObjectCreated:*".into()],
            prefix: "in/".into(),
            suffix: String::new(),
        },
        NotificationRule {
            id: "removals".into(),
            target: Target::Function("arn:aws:lambda:us-east-1:111111111111:function:f".into()),
            events: vec!["s3:ObjectRemoved:*".into()],
            prefix: String::new(),
            suffix: String::new(),
        },
    ];
    let missing = vec![NotificationRule {
        target: Target::Queue("arn:aws:sqs:us-east-1:111111111111:missing".into()),
        ..rules[0].clone()
    }];
    assert!(matches!(
        o.set_notifications("events", missing, &AnyTarget).await,
        Err(Error::InvalidArgument(m)) if m.contains("Unable to validate")
    ));
    o.set_notifications("events", rules, &AnyTarget)
        .await
        .unwrap();
    put(&o, "events", "in/a.txt", b"a").await;
    put(&o, "events", "elsewhere.txt", b"b").await;
    o.delete("events", "in/a.txt", None, &Actor::default())
        .await
        .unwrap();
    o.delete("events", "never-there", None, &Actor::default())
        .await
        .unwrap();
    let pending = o.outbox(100).unwrap();
    assert_eq!(pending.len(), 2, "{pending:?}");
    assert_eq!(pending[0].1.target, Target::Queue(queue));
    assert!(pending[0].1.body.contains("ObjectCreated:Put"));
    assert!(pending[1].1.body.contains("ObjectRemoved:Delete"));
    assert!(pending[0].0 < pending[1].0);
    o.delivered(vec![pending[0].0]).await.unwrap();
    o.shutdown();
    drop(o);
    // What was not delivered is still there after a restart.
    let o = Objects::open(dir.path()).unwrap();
    let left = o.outbox(100).unwrap();
    assert_eq!(left.len(), 1);
    assert!(left[0].1.body.contains("ObjectRemoved:Delete"));
}

async fn versioned_bucket(o: &Objects, name: &str) {
    o.create_bucket("111111111111", name, "us-east-1")
        .await
        .unwrap();
    o.set_versioning(name, Versioning::Enabled).await.unwrap();
}

fn listed(o: &Objects, bucket: &str, query: &VersionQuery) -> Vec<(String, String, bool, bool)> {
    o.list_versions(bucket, query)
        .unwrap()
        .versions
        .into_iter()
        .map(|v| {
            (
                v.key,
                shown_id(&v.record).to_owned(),
                v.record.delete_marker,
                v.latest,
            )
        })
        .collect()
}

fn vref(id: &str) -> VersionRef {
    VersionRef::parse(id).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_keep_history_and_delete_markers_hide_keys() {
    let dir = tempfile::tempdir().unwrap();
    let o = Objects::open(dir.path()).unwrap();
    versioned_bucket(&o, "vers").await;
    let first = vec![1u8; 100_000];
    let r1 = put(&o, "vers", "k", &first).await;
    let r2 = put(&o, "vers", "k", b"two").await;
    let (id1, id2) = (
        r1.version_id.clone().unwrap(),
        r2.version_id.clone().unwrap(),
    );
    assert_ne!(id1, id2);
    assert_eq!(read(&o, "vers", "k", None).await, b"two");
    let old = o
        .open_object(
            "vers",
            "k",
            Some(&vref(&id1)),
            &ReadConditions::default(),
            None,
            None,
        )
        .unwrap();
    assert_eq!(old.record.etag, r1.etag);
    // Deleting the key makes a marker; the key is gone from reads and listings.
    let removal = o
        .delete("vers", "k", None, &Actor::default())
        .await
        .unwrap();
    assert!(removal.delete_marker);
    let marker = removal.version_id.unwrap();
    assert!(matches!(
        o.head("vers", "k", None),
        Err(Error::DeleteMarker { version_id: Some(m), named: false }) if m == marker
    ));
    assert!(matches!(
        o.head("vers", "k", Some(&vref(&marker))),
        Err(Error::DeleteMarker { named: true, .. })
    ));
    assert!(matches!(
        o.head("vers", "k", Some(&vref("00000000000000ff0000000000000000"))),
        Err(Error::NoSuchVersion)
    ));
    assert!(matches!(
        VersionRef::parse("../x"),
        Err(Error::InvalidArgument(_))
    ));
    assert!(
        o.list(
            "vers",
            &ListQuery {
                max: 10,
                ..Default::default()
            }
        )
        .unwrap()
        .objects
        .is_empty()
    );
    let all = VersionQuery {
        max: 100,
        ..Default::default()
    };
    assert_eq!(
        listed(&o, "vers", &all),
        vec![
            ("k".into(), marker.clone(), true, true),
            ("k".into(), id2.clone(), false, false),
            ("k".into(), id1.clone(), false, false),
        ]
    );
    // Removing the marker brings the newest object back; removing that, the one before.
    let gone = o
        .delete("vers", "k", Some(&marker), &Actor::default())
        .await
        .unwrap();
    assert!(gone.delete_marker);
    assert_eq!(read(&o, "vers", "k", None).await, b"two");
    assert!(matches!(
        o.delete_bucket("vers").await,
        Err(Error::BucketNotEmpty)
    ));
    o.delete("vers", "k", Some(&id2), &Actor::default())
        .await
        .unwrap();
    assert_eq!(read(&o, "vers", "k", None).await, first);
    assert_eq!(blob_files(dir.path()), 1);
    o.delete("vers", "k", Some(&id1), &Actor::default())
        .await
        .unwrap();
    assert_eq!(blob_files(dir.path()), 0);
    assert!(listed(&o, "vers", &all).is_empty());
    o.delete_bucket("vers").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_bucket_replaces_only_the_null_version() {
    let dir = tempfile::tempdir().unwrap();
    let o = Objects::open(dir.path()).unwrap();
    o.create_bucket("111111111111", "susp", "us-east-1")
        .await
        .unwrap();
    let big = |b: u8| vec![b; 70_000];
    let before = put(&o, "susp", "k", &big(1)).await;
    assert_eq!(before.version_id, None);
    o.set_versioning("susp", Versioning::Enabled).await.unwrap();
    let v1 = put(&o, "susp", "k", &big(2)).await.version_id.unwrap();
    assert_eq!(blob_files(dir.path()), 2);
    o.set_versioning("susp", Versioning::Suspended)
        .await
        .unwrap();
    // The null version written before versioning goes; v1 stays.
    put(&o, "susp", "k", &big(3)).await;
    assert_eq!(blob_files(dir.path()), 2);
    let all = VersionQuery {
        max: 100,
        ..Default::default()
    };
    assert_eq!(
        listed(&o, "susp", &all),
        vec![
            ("k".into(), "null".into(), false, true),
            ("k".into(), v1.clone(), false, false),
        ]
    );
    put(&o, "susp", "k", &big(4)).await;
    assert_eq!(blob_files(dir.path()), 2);
    assert_eq!(read(&o, "susp", "k", None).await, big(4));
    // A delete makes a null marker in place of the null object.
    let removal = o
        .delete("susp", "k", None, &Actor::default())
        .await
        .unwrap();
    assert_eq!(removal.version_id.as_deref(), Some("null"));
    assert_eq!(blob_files(dir.path()), 1);
    assert_eq!(
        listed(&o, "susp", &all),
        vec![
            ("k".into(), "null".into(), true, true),
            ("k".into(), v1.clone(), false, false),
        ]
    );
    let restored = o
        .copy(
            "susp",
            "k",
            Some(&vref(&v1)),
            &ReadConditions::default(),
            "susp",
            "k",
            MetadataDirective::Copy,
            WriteConditions::default(),
            &Actor::default(),
        )
        .await
        .unwrap();
    assert_eq!(restored.version_id, None);
    assert_eq!(read(&o, "susp", "k", None).await, big(2));
    assert!(
        o.set_versioning("susp", Versioning::Unversioned)
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_listings_page_by_key_and_version_and_roll_up_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let o = Objects::open(dir.path()).unwrap();
    versioned_bucket(&o, "page").await;
    for key in ["a", "a", "b", "dir/x", "dir/y", "c"] {
        put(&o, "page", key, key.as_bytes()).await;
    }
    o.delete("page", "b", None, &Actor::default())
        .await
        .unwrap();
    let everything = listed(
        &o,
        "page",
        &VersionQuery {
            max: 100,
            ..Default::default()
        },
    );
    let keys: Vec<&str> = everything.iter().map(|v| v.0.as_str()).collect();
    assert_eq!(keys, ["a", "a", "b", "b", "c", "dir/x", "dir/y"]);
    // One at a time, resuming from each page's markers, gives the same.
    let mut paged = Vec::new();
    let mut query = VersionQuery {
        max: 1,
        ..Default::default()
    };
    loop {
        let page = o.list_versions("page", &query).unwrap();
        for v in page.versions {
            paged.push((
                v.key,
                shown_id(&v.record).to_owned(),
                v.record.delete_marker,
                v.latest,
            ));
        }
        if !page.truncated {
            break;
        }
        query.key_marker = page.next_key_marker;
        query.version_marker = page.next_version_marker;
    }
    assert_eq!(paged, everything);
    let rolled = o
        .list_versions(
            "page",
            &VersionQuery {
                delimiter: Some("/".into()),
                max: 100,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(rolled.common_prefixes, ["dir/"]);
    assert_eq!(rolled.versions.len(), 5);
    let under = listed(
        &o,
        "page",
        &VersionQuery {
            prefix: "dir/".into(),
            key_marker: Some("dir/x".into()),
            max: 100,
            ..Default::default()
        },
    );
    assert_eq!(under.len(), 1);
    assert_eq!(under[0].0, "dir/y");
}
