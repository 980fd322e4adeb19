//! The Raft transport between pycomd nodes: plain TCP on `peer_listen`,
//! frames of a u32 big-endian length and JSON. A request names the node it
//! is for (an address may come to belong to another node); the answer is a
//! status byte (0: the JSON result follows, 1: an error's text) and the
//! rest. openraft opens one connection per replication stream and asks one
//! thing at a time on each, so nothing needs request ids.

use super::{Node, Raft, Request, SnapshotData, SnapshotMeta, TypeConfig, Vote};
use openraft::error::{
    ClientWriteError, NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::io;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

/// Largest frame taken from a peer (a snapshot of the largest registry
/// fits; anything bigger is refused before it is allocated).
const MAX_FRAME: usize = 1 << 30;
/// How long a forwarded write may take at the leader.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Serialize, Deserialize)]
enum PeerRequest {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<TypeConfig>),
    PreVote(VoteRequest<TypeConfig>),
    Snapshot {
        vote: Vote,
        meta: SnapshotMeta,
        data: SnapshotData,
    },
    TransferLeader(TransferLeaderRequest<TypeConfig>),
    /// A follower's proposal, to append on the leader.
    Forward(Request),
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    to: u64,
    request: PeerRequest,
}

async fn write_frame(w: &mut BufWriter<OwnedWriteHalf>, bytes: &[u8]) -> io::Result<()> {
    let len = u32::try_from(bytes.len()).map_err(|_| io::Error::other("frame too large"))?;
    w.write_u32(len).await?;
    w.write_all(bytes).await?;
    w.flush().await
}

async fn read_frame(r: &mut BufReader<OwnedReadHalf>) -> io::Result<Vec<u8>> {
    let n = r.read_u32().await? as usize;
    if n > MAX_FRAME {
        return Err(io::Error::other(format!(
            "a frame of {n} bytes is over {MAX_FRAME}"
        )));
    }
    let mut buf = vec![0; n];
    r.read_exact(&mut buf).await?;
    Ok(buf)
}

/// One connection to one peer.
pub struct PeerClient {
    target: u64,
    addr: String,
    conn: Option<(BufReader<OwnedReadHalf>, BufWriter<OwnedWriteHalf>)>,
}

impl PeerClient {
    fn new(target: u64, addr: String) -> PeerClient {
        PeerClient {
            target,
            addr,
            conn: None,
        }
    }

    /// A failure to connect is `Unreachable` (openraft backs off); one
    /// during a call `Network`.
    async fn call<T: DeserializeOwned>(
        &mut self,
        request: PeerRequest,
        ttl: Duration,
    ) -> Result<T, RPCError<TypeConfig>> {
        let body = serde_json::to_vec(&Envelope {
            to: self.target,
            request,
        })
        .map_err(|e| NetworkError::new(&e))?;
        match tokio::time::timeout(ttl, self.round_trip(&body)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.conn = None;
                Err(e)
            }
            Err(_) => {
                self.conn = None;
                Err(
                    NetworkError::from_string(format!("node {} did not answer within {ttl:?}", self.target))
                        .into(),
                )
            }
        }
    }

    async fn round_trip<T: DeserializeOwned>(&mut self, body: &[u8]) -> Result<T, RPCError<TypeConfig>> {
        if self.conn.is_none() {
            let stream = TcpStream::connect(&self.addr)
                .await
                .map_err(|e| Unreachable::new(&e))?;
            let _ = stream.set_nodelay(true);
            let (r, w) = stream.into_split();
            self.conn = Some((BufReader::new(r), BufWriter::new(w)));
        }
        let Some((r, w)) = self.conn.as_mut() else {
            return Err(NetworkError::from_string("no connection").into());
        };
        write_frame(w, body).await.map_err(|e| NetworkError::new(&e))?;
        let answer = read_frame(r).await.map_err(|e| NetworkError::new(&e))?;
        match answer.split_first() {
            Some((0, json)) => serde_json::from_slice(json).map_err(|e| NetworkError::new(&e).into()),
            Some((_, text)) => Err(Unreachable::from_string(String::from_utf8_lossy(text)).into()),
            None => Err(NetworkError::from_string("an empty answer").into()),
        }
    }
}

/// The remote Raft answered with an error (it is stopping).
fn remote<T>(r: Result<T, RaftError<TypeConfig>>) -> Result<T, RPCError<TypeConfig>> {
    r.map_err(|e| Unreachable::new(&e).into())
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        remote(self.call(PeerRequest::Append(rpc), option.soft_ttl()).await?)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        remote(self.call(PeerRequest::Vote(rpc), option.soft_ttl()).await?)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        remote(self.call(PeerRequest::PreVote(rpc), option.soft_ttl()).await?)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>,
        cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let request = PeerRequest::Snapshot {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot,
        };
        let ttl = option.hard_ttl();
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            r = self.call::<Result<SnapshotResponse<TypeConfig>, RaftError<TypeConfig>>>(request, ttl) => Ok(remote(r?)?),
        }
    }

    async fn transfer_leader(
        &mut self,
        request: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        remote(
            self.call(PeerRequest::TransferLeader(request), option.soft_ttl())
                .await?,
        )
    }
}

/// A [`PeerClient`] per target: at the address this node's configuration
/// gives it (each node may reach the others its own way: through a proxy,
/// another network), else the one the membership lists (members added
/// later).
#[derive(Clone)]
pub struct PeerNetwork {
    pub configured: std::sync::Arc<std::collections::BTreeMap<u64, Node>>,
}

impl PeerNetwork {
    pub fn peer(&self, target: u64, node: &Node) -> String {
        self.configured
            .get(&target)
            .map_or_else(|| node.peer.clone(), |n| n.peer.clone())
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &Node) -> PeerClient {
        PeerClient::new(target, self.peer(target, node))
    }
}

/// A follower's proposal, appended on the leader. `Ok(Ok(()))`: the
/// leader applied it (this node's own apply answers the client).
pub async fn forward(
    leader: u64,
    peer: String,
    request: Request,
) -> Result<Result<(), ClientWriteError<TypeConfig>>, RPCError<TypeConfig>> {
    let mut client = PeerClient::new(leader, peer);
    let r: Result<(), RaftError<TypeConfig, ClientWriteError<TypeConfig>>> = client
        .call(PeerRequest::Forward(request), FORWARD_TIMEOUT)
        .await?;
    match r {
        Ok(()) => Ok(Ok(())),
        Err(RaftError::APIError(e)) => Ok(Err(e)),
        // The leader stopped: the entry may have been appended already.
        Err(RaftError::Fatal(f)) => Err(NetworkError::new(&f).into()),
    }
}

/// When this node last took entries (or a heartbeat) from a leader: a
/// follower that has not for longer than an election timeout says in
/// `stat` that its reads may be behind.
#[derive(Clone)]
pub struct LeaderContact {
    since: std::time::Instant,
    /// Milliseconds from `since`; 0: never.
    last_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Default for LeaderContact {
    fn default() -> LeaderContact {
        LeaderContact {
            since: std::time::Instant::now(),
            last_ms: Default::default(),
        }
    }
}

impl LeaderContact {
    fn heard(&self) {
        let ms = self.since.elapsed().as_millis().max(1) as u64;
        self.last_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long since a leader was last heard (since start if never).
    pub fn silence(&self) -> std::time::Duration {
        let last = self.last_ms.load(std::sync::atomic::Ordering::Relaxed);
        self.since
            .elapsed()
            .saturating_sub(std::time::Duration::from_millis(last))
    }
}

/// Serve the peers until the runtime stops: a task per connection,
/// requests in order.
pub async fn serve(listener: TcpListener, me: u64, raft: Raft, contact: LeaderContact) {
    loop {
        let Ok((stream, from)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let raft = raft.clone();
        let contact = contact.clone();
        tokio::spawn(async move {
            let (r, w) = stream.into_split();
            let (mut r, mut w) = (BufReader::new(r), BufWriter::new(w));
            while let Ok(frame) = read_frame(&mut r).await {
                let answer = match serde_json::from_slice::<Envelope>(&frame) {
                    Ok(envelope) if envelope.to == me => dispatch(&raft, envelope.request, &contact).await,
                    Ok(envelope) => Err(format!("this is node {me}, not node {}", envelope.to)),
                    Err(e) => Err(format!("a frame that does not parse: {e}")),
                };
                let mut out = Vec::new();
                match answer {
                    Ok(json) => {
                        out.push(0);
                        out.extend_from_slice(&json);
                    }
                    Err(text) => {
                        debug!(%from, "peer request refused: {text}");
                        out.push(1);
                        out.extend_from_slice(text.as_bytes());
                    }
                }
                if write_frame(&mut w, &out).await.is_err() {
                    break;
                }
            }
        });
    }
}

async fn dispatch(raft: &Raft, request: PeerRequest, contact: &LeaderContact) -> Result<Vec<u8>, String> {
    let json = match request {
        PeerRequest::Append(rpc) => {
            let answer = raft.append_entries(rpc).await;
            // Taken from a leader of the current term (not refused for a
            // higher vote): the leader is alive and reaches this node.
            if matches!(&answer, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
                contact.heard();
            }
            serde_json::to_vec(&answer)
        }
        PeerRequest::Vote(rpc) => serde_json::to_vec(&raft.vote(rpc).await),
        PeerRequest::PreVote(rpc) => serde_json::to_vec(&raft.pre_vote(rpc).await),
        PeerRequest::Snapshot { vote, meta, data } => {
            let snapshot = openraft::Snapshot { meta, snapshot: data };
            let r: Result<SnapshotResponse<TypeConfig>, RaftError<TypeConfig>> = raft
                .install_full_snapshot(vote, snapshot)
                .await
                .map_err(RaftError::Fatal);
            serde_json::to_vec(&r)
        }
        PeerRequest::TransferLeader(rpc) => {
            let r: Result<TransferLeaderResponse<TypeConfig>, RaftError<TypeConfig>> =
                raft.handle_transfer_leader(rpc).await.map_err(RaftError::Fatal);
            serde_json::to_vec(&r)
        }
        PeerRequest::Forward(request) => {
            let r = raft.client_write(request).await.map(|_| ());
            serde_json::to_vec(&r)
        }
    };
    json.map_err(|e| e.to_string())
}
