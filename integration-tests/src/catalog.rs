//! Catalog fixtures: DDOs written by hand for the search specification, and a
//! generator of realistic synthetic assets for the search benchmark.

use alloy::primitives::{Address, B256, U256};
use insitu_catalog::{AssetStore, Column, DataFormat, Ddo, DdoService, StorageLocation};
use insitu_ledger::{Did, ServiceOffer, ServiceType};

/// A DDO with the given text fields; `n` makes the DID and the creation time.
pub fn ddo(
    n: u64,
    owner: Address,
    name: &str,
    description: &str,
    tags: &[&str],
    columns: &[&str],
    services: &[(ServiceType, u64)],
) -> Ddo {
    let mut seed = [0u8; 32];
    seed[24..].copy_from_slice(&n.to_be_bytes());
    Ddo {
        did: Did::derive(owner, B256::from(seed)),
        chain_id: 31337,
        owner,
        provider: owner,
        name: name.into(),
        description: description.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        format: DataFormat::Parquet,
        schema: columns
            .iter()
            .map(|c| Column {
                name: c.to_string(),
                data_type: "Int64".into(),
                nullable: true,
            })
            .collect(),
        row_count: Some(1000),
        byte_size: Some(64_000),
        services: services
            .iter()
            .enumerate()
            .map(|(i, (t, price))| DdoService {
                index: i as u64,
                offer: ServiceOffer {
                    service_type: *t,
                    token: None,
                    price: U256::from(*price),
                    access_duration: 86_400,
                    fulfill_timeout: 3_600,
                },
            })
            .collect(),
        created_at: 1_700_000_000 + n,
    }
}

/// Records `ddo` as a registered asset (the chain side is not under test here).
pub async fn add(store: &AssetStore, ddo: &Ddo) -> anyhow::Result<()> {
    store
        .insert(
            ddo,
            &StorageLocation {
                url: format!("file:///private/{}.parquet", ddo.did),
                format: DataFormat::Parquet,
                schema_ipc: Vec::new(),
            },
        )
        .await?;
    store.mark_registered(ddo.did).await?;
    Ok(())
}

const SUBJECTS: &[&str] = &[
    "sales",
    "orders",
    "customers",
    "shipments",
    "inventory",
    "payments",
    "sensors",
    "trips",
    "admissions",
    "claims",
    "weather",
    "energy",
    "traffic",
    "returns",
    "prices",
    "clicks",
    "sessions",
    "devices",
    "accounts",
    "loans",
    "trades",
    "flights",
    "crops",
    "emissions",
];
const QUALIFIERS: &[&str] = &[
    "daily",
    "hourly",
    "monthly",
    "regional",
    "national",
    "anonymised",
    "aggregated",
    "raw",
    "curated",
    "historical",
    "streaming",
    "quarterly",
];
const REGIONS: &[&str] = &[
    "europe", "asia", "africa", "americas", "oceania", "nordics", "iberia", "benelux", "andes",
    "sahel",
];
const COLUMNS: &[&str] = &[
    "id",
    "customer_id",
    "order_id",
    "amount",
    "currency",
    "created_at",
    "region",
    "quantity",
    "unit_price",
    "status",
    "latitude",
    "longitude",
    "temperature",
    "ward",
    "device_id",
    "kwh",
    "fare_amount",
    "tip_amount",
    "sku",
    "score",
];
const TAGS: &[&str] = &[
    "finance",
    "retail",
    "health",
    "mobility",
    "iot",
    "energy",
    "climate",
    "public",
    "gdpr",
    "tpch",
    "benchmark",
    "research",
];

/// Asset `i` of a deterministic synthetic catalog: names, descriptions, tags, columns
/// and prices drawn from small vocabularies with a long tail (a unique code word per
/// asset), owned by one of 50 organisations.
pub fn synthetic(i: u64) -> Ddo {
    let pick = |list: &[&'static str], salt: u64| -> &'static str {
        let h = i
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(salt as u32 * 7)
            ^ salt;
        list[(h % list.len() as u64) as usize]
    };
    let subject = pick(SUBJECTS, 1);
    let qualifier = pick(QUALIFIERS, 2);
    let region = pick(REGIONS, 3);
    let name = format!("{qualifier} {subject} {region} {i}");
    let description = format!(
        "{} {subject} records for {region}, collected by partner {} and refreshed {qualifier}. \
         Code word zx{i:x}.",
        pick(QUALIFIERS, 4),
        i % 977
    );
    let tags = [pick(TAGS, 5), pick(TAGS, 6)];
    let columns: Vec<&str> = (0..6).map(|k| pick(COLUMNS, 10 + k)).collect();
    let service = match i % 4 {
        0 => ServiceType::Download,
        1 | 2 => ServiceType::Query,
        _ => ServiceType::Compute,
    };
    let owner = Address::with_last_byte((i % 50) as u8 + 1);
    ddo(
        i,
        owner,
        &name,
        &description,
        &tags,
        &columns,
        &[(service, (i % 100) * 1_000)],
    )
}
