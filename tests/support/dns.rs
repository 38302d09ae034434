//! A tiny authoritative DNS server on a loopback UDP port, for discovery
//! tests: it answers A queries for any name with the addresses the test sets
//! (TTL 1 s), AAAA queries with no records, and SERVFAIL while told to fail.
//! Hand-encoded (RFC 1035 §4) because the tests need nothing more.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

const TYPE_A: u16 = 1;
const RCODE_SERVFAIL: u8 = 2;

/// What the server answers now.
#[derive(Debug, Default)]
struct Answers {
    addresses: Vec<Ipv4Addr>,
    fail: bool,
}

/// The server; stops when dropped.
pub struct DnsServer {
    pub addr: SocketAddr,
    answers: Arc<Mutex<Answers>>,
    queries: Arc<std::sync::atomic::AtomicUsize>,
    task: JoinHandle<()>,
}

impl DnsServer {
    pub async fn start(addresses: &[Ipv4Addr]) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let answers = Arc::new(Mutex::new(Answers {
            addresses: addresses.to_vec(),
            fail: false,
        }));
        let queries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let task = tokio::spawn(serve(socket, Arc::clone(&answers), Arc::clone(&queries)));
        Self {
            addr,
            answers,
            queries,
            task,
        }
    }

    /// Answers A queries with `addresses` from now on.
    pub fn set(&self, addresses: &[Ipv4Addr]) {
        let mut answers = self.answers.lock().unwrap();
        answers.addresses = addresses.to_vec();
        answers.fail = false;
    }

    /// Answers SERVFAIL to everything from now on.
    pub fn fail(&self) {
        self.answers.lock().unwrap().fail = true;
    }

    /// Queries received so far.
    pub fn queries(&self) -> usize {
        self.queries.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    socket: UdpSocket,
    answers: Arc<Mutex<Answers>>,
    queries: Arc<std::sync::atomic::AtomicUsize>,
) {
    let mut buf = [0u8; 1500];
    loop {
        let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        queries.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let (addresses, fail) = {
            let a = answers.lock().unwrap();
            (a.addresses.clone(), a.fail)
        };
        if let Some(reply) = answer(&buf[..len], &addresses, fail) {
            let _ = socket.send_to(&reply, peer).await;
        }
    }
}

/// Builds the reply to one query, or `None` if it is not a query we read.
fn answer(query: &[u8], addresses: &[Ipv4Addr], fail: bool) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    // The question: labels up to a zero byte, then type and class.
    let mut end = 12;
    while *query.get(end)? != 0 {
        end += 1 + usize::from(query[end]);
    }
    let question_end = end + 5;
    let qtype = u16::from_be_bytes([*query.get(end + 1)?, *query.get(end + 2)?]);
    let question = query.get(12..question_end)?;
    let records: &[Ipv4Addr] = if fail || qtype != TYPE_A {
        &[]
    } else {
        addresses
    };
    let mut reply = Vec::with_capacity(64);
    reply.extend_from_slice(&query[0..2]); // id
    let rd = query[2] & 0x01;
    reply.push(0x84 | rd); // QR, AA, RD copied
    reply.push(if fail { RCODE_SERVFAIL } else { 0 }); // RA=0, rcode
    reply.extend_from_slice(&1u16.to_be_bytes()); // qdcount
    reply.extend_from_slice(&u16::try_from(records.len()).unwrap().to_be_bytes());
    reply.extend_from_slice(&0u16.to_be_bytes()); // nscount
    reply.extend_from_slice(&0u16.to_be_bytes()); // arcount
    reply.extend_from_slice(question);
    for ip in records {
        reply.extend_from_slice(&[0xc0, 0x0c]); // pointer to the question's name
        reply.extend_from_slice(&TYPE_A.to_be_bytes());
        reply.extend_from_slice(&1u16.to_be_bytes()); // class IN
        reply.extend_from_slice(&1u32.to_be_bytes()); // TTL 1 s
        reply.extend_from_slice(&4u16.to_be_bytes());
        reply.extend_from_slice(&ip.octets());
    }
    Some(reply)
}
