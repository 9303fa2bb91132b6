//! Typed tables inside transactions: records written with `set_in`/`delete_in` commit
//! all or nothing with the rest of the transaction, reads with `get_in` are validated,
//! `Table::update` is atomic against transactions, and record counts stay exact.

use bytemuck::{Pod, Zeroable};
use ringdb::{Db, Error, Options};

mod common;

use common::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C)]
struct Account {
    balance: u64,
    moves: u64,
}
ringdb::record!(Account, "Account", 1, [balance, moves]);

fn open(dir: &std::path::Path) -> Db {
    Db::open(dir, Options::default().shards(2)).unwrap()
}

#[test]
fn table_writes_commit_with_the_transaction_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let accounts = db.table::<Account>("accounts").unwrap();
    accounts.set(1, &Account { balance: 10, moves: 0 }).unwrap();

    let mut tx = db.transaction();
    assert_eq!(accounts.get_in(&mut tx, 1).unwrap(), Some(Account { balance: 10, moves: 0 }));
    accounts.set_in(&mut tx, 1, &Account { balance: 4, moves: 1 }).unwrap();
    accounts.set_in(&mut tx, 2, &Account { balance: 6, moves: 1 }).unwrap();
    tx.put(b"audit", b"moved 6").unwrap();
    assert_eq!(accounts.get_in(&mut tx, 2).unwrap(), Some(Account { balance: 6, moves: 1 }), "its own write");
    assert_eq!(accounts.get(2).unwrap(), None, "not visible before commit");
    tx.rollback();
    assert_eq!(accounts.get(1).unwrap(), Some(Account { balance: 10, moves: 0 }));
    assert_eq!(accounts.get(2).unwrap(), None);
    assert_eq!(db.get(b"audit").unwrap(), None);
    assert_eq!(accounts.len(), 1);

    let mut tx = db.transaction();
    accounts.set_in(&mut tx, 1, &Account { balance: 4, moves: 1 }).unwrap();
    accounts.set_in(&mut tx, 2, &Account { balance: 6, moves: 1 }).unwrap();
    tx.put(b"audit", b"moved 6").unwrap();
    tx.commit().unwrap();
    assert_eq!(accounts.get(2).unwrap(), Some(Account { balance: 6, moves: 1 }));
    assert_eq!(db.get(b"audit").unwrap().as_deref(), Some(&b"moved 6"[..]));
    assert_eq!(accounts.len(), 2);

    let mut tx = db.transaction();
    assert!(accounts.delete_in(&mut tx, 2).unwrap());
    assert!(!accounts.delete_in(&mut tx, 2).unwrap(), "already deleted as the transaction sees it");
    tx.commit().unwrap();
    assert_eq!(accounts.len(), 1);
    db.close().unwrap();

    let db = open(dir.path());
    let accounts = db.table::<Account>("accounts").unwrap();
    assert_eq!(accounts.len(), 1, "the count rebuilt on open agrees");
    assert_eq!(accounts.get(1).unwrap(), Some(Account { balance: 4, moves: 1 }));
    db.close().unwrap();
}

#[test]
fn a_record_read_in_a_transaction_and_changed_meanwhile_is_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let accounts = db.table::<Account>("accounts").unwrap();
    accounts.set(7, &Account { balance: 100, moves: 0 }).unwrap();
    let mut tx = db.transaction();
    let seen = accounts.get_in(&mut tx, 7).unwrap().unwrap();
    accounts.update(7, |a| a.balance += 1).unwrap();
    accounts.set_in(&mut tx, 7, &Account { balance: seen.balance - 50, moves: 1 }).unwrap();
    let err = tx.commit().unwrap_err();
    assert!(err.is_conflict(), "{err:?}");
    assert_eq!(accounts.get(7).unwrap(), Some(Account { balance: 101, moves: 0 }), "the update stands alone");
    db.close().unwrap();
}

#[test]
fn users_transactions_cannot_touch_reserved_keys() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let accounts = db.table::<Account>("accounts").unwrap();
    accounts.set(0, &Account { balance: 1, moves: 0 }).unwrap();
    let mut tx = db.transaction();
    assert!(matches!(tx.put(b"\xFFringdb-anything", b"x"), Err(Error::InvalidArgument(_))));
    assert!(matches!(tx.get(b"\xFFringdb-anything"), Err(Error::InvalidArgument(_))));
    tx.put(b"a", b"1").unwrap();
    // The refused operations failed the transaction: its commit says so, writing nothing.
    assert!(matches!(tx.commit(), Err(Error::InvalidArgument(_))));
    assert_eq!(db.get(b"a").unwrap(), None);
    let mut tx = db.transaction();
    tx.put(b"a", b"1").unwrap();
    let all = tx.scan(..).unwrap();
    assert_eq!(all.len(), 1, "a transaction's scan shows no table record: {all:?}");
    tx.commit().unwrap();
    db.close().unwrap();
}

/// Transfers between typed records in transactions race `Table::update` deposits: no
/// money appears or vanishes beyond the deposits, and every committed read-only audit
/// sees a consistent total.
#[test]
fn transfers_between_records_race_updates_and_keep_the_books() {
    const ACCOUNTS: u64 = 64;
    const START: u64 = 1_000;
    let seed = common::seed("table_tx");
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let accounts = db.table::<Account>("accounts").unwrap();
    for i in 0..ACCOUNTS {
        accounts.set(i, &Account { balance: START, moves: 0 }).unwrap();
    }
    let deposits = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (db, accounts) = (&db, &accounts);
            s.spawn(move || {
                let mut rng = Rng::for_parts(&[seed, t]);
                for _ in 0..150 {
                    let (from, to) = (rng.range(0, ACCOUNTS - 1), rng.range(0, ACCOUNTS - 1));
                    if from == to {
                        continue;
                    }
                    let amount = rng.range(1, 50);
                    db.transact(|tx| {
                        let mut a = accounts.get_in(tx, from)?.expect("every account exists");
                        let mut b = accounts.get_in(tx, to)?.expect("every account exists");
                        if a.balance < amount {
                            return Ok(());
                        }
                        a.balance -= amount;
                        b.balance += amount;
                        a.moves += 1;
                        b.moves += 1;
                        accounts.set_in(tx, from, &a)?;
                        accounts.set_in(tx, to, &b)
                    })
                    .unwrap();
                }
            });
        }
        {
            let (accounts, deposits) = (&accounts, &deposits);
            s.spawn(move || {
                let mut rng = Rng::for_parts(&[seed, 99]);
                for _ in 0..200 {
                    let i = rng.range(0, ACCOUNTS - 1);
                    accounts.update(i, |a| a.balance += 1).unwrap().expect("every account exists");
                    deposits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
        {
            let (db, accounts, deposits) = (&db, &accounts, &deposits);
            s.spawn(move || {
                for _ in 0..20 {
                    let (total, deposited_before) = db
                        .transact(|tx| {
                            let before = deposits.load(std::sync::atomic::Ordering::Relaxed);
                            let mut total = 0;
                            for i in 0..ACCOUNTS {
                                total += accounts.get_in(tx, i)?.expect("every account exists").balance;
                            }
                            Ok((total, before))
                        })
                        .unwrap();
                    assert!(
                        total >= ACCOUNTS * START + deposited_before && total <= ACCOUNTS * START + 200,
                        "an audit saw {total}"
                    );
                }
            });
        }
    });
    let total: u64 = accounts.scan(..).map(|r| r.unwrap().1.balance).sum();
    assert_eq!(total, ACCOUNTS * START + 200, "seed={seed}");
    assert_eq!(accounts.len(), ACCOUNTS);
    db.close().unwrap();
}
