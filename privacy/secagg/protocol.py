"""SecAgg+ (Bell, Bonawitz, Gascon, Lepoint and Raykova, CCS 2020) in one process, with real bytes.

Clients 0..n-1 each hold a vector in the ring Z_{2^b}. Each masks with k neighbours in a
random k-regular graph (a ring of the clients in a random order, each joined to the k/2
nearest on either side; k >= n - 1 is the complete graph, the original SecAgg), and
Shamir-shares its secrets t-of-(k + 1) among them and itself. Four stages; a client that drops at a stage
sends nothing from it on:

1. advertise: two X25519 public keys, one to encrypt shares, one to agree masks.
2. share:     a fresh self-mask seed b_u; Shamir shares of b_u and of the mask private key,
              each encrypted for its holder (the server routes what it cannot read).
3. mask:      y_u = x_u + PRG(b_u) + sum over neighbours v that shared of +-PRG(s_uv)
              mod 2^b (+ when u < v): the pairwise masks cancel in the sum.
4. unmask:    the server names the clients whose masked input arrived (U3) and those that
              shared but sent none (dropped); each remaining client returns its share of b_u
              for u in U3 and of the mask key for dropped u, never both for one client.

The server rebuilds b_u for u in U3 and the dropped clients' mask keys, removes the masks
and keeps only the sum over U3. It aborts (`SecAggAbort`) when fewer than t clients remain
at a stage, when a secret has fewer than t shares left, or when the clients in U3 fall into
groups of fewer than t that share no mask (each group's sum would be exposed): the
semi-honest server of the paper. `Server.received` records every byte it was sent.
"""
from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field

import numpy as np

from privacy.secagg import crypto

STAGES = ("advertise", "share", "mask", "unmask")
SHARE_PURPOSE, MASK_PURPOSE = b"secagg+ share encryption", b"secagg+ pairwise mask"
_HEADER = struct.Struct("<II")       # sender, recipient
_SHARE = struct.Struct("<III")       # owner, holder, share index (1-based)
_RECORD = struct.Struct("<cII")      # kind (b"b" seed, b"s" mask key), owner, share index


class SecAggAbort(RuntimeError):
    """The protocol stopped without a sum; the message names the stage and the counts."""

    def __init__(self, stage: str, what: str):
        super().__init__(f"secure aggregation aborted at stage {stage!r}: {what}")
        self.stage = stage


@dataclass(frozen=True)
class SecAggParams:
    clients: int
    neighbours: int  # k: the mask and share neighbours of each client (even, or >= clients - 1)
    threshold: int   # t: shares that rebuild a secret (of k + 1: the neighbours and the client), and
    #                  clients that must remain
    bits: int        # the ring Z_{2^bits}

    def __post_init__(self):
        k = min(self.neighbours, self.clients - 1)
        if not 1 <= self.bits <= 64:
            raise ValueError(f"the ring needs 1 to 64 bits, not {self.bits}")
        if k < self.clients - 1 and k % 2:
            raise ValueError(f"{self.neighbours} neighbours: a k-regular ring of {self.clients} clients needs an even "
                             f"k, or k >= {self.clients - 1} (every client)")
        if not 1 <= self.threshold <= k + 1:
            raise ValueError(f"threshold {self.threshold} must be between 1 and the {k + 1} holders of each client's "
                             f"shares (its {k} neighbours and itself)")

    @property
    def degree(self) -> int:
        return min(self.neighbours, self.clients - 1)

    @property
    def width(self) -> int:
        """Bytes per ring element on the wire."""
        return next(w for w in (1, 2, 4, 8) if 8 * w >= self.bits)


def neighbourhood(params: SecAggParams, rng: np.random.Generator) -> list[list[int]]:
    """Each client's neighbours: the complete graph, or a ring in a random order with the
    k/2 nearest on either side."""
    n, k = params.clients, params.degree
    if k >= n - 1:
        return [[v for v in range(n) if v != u] for u in range(n)]
    order = rng.permutation(n)
    position = np.argsort(order)
    return [sorted(int(order[(position[u] + s) % n]) for j in range(1, k // 2 + 1) for s in (j, -j))
            for u in range(n)]


def encode(vector: np.ndarray, params: SecAggParams) -> bytes:
    return vector.astype(f"<u{params.width}").tobytes()


def decode(payload: bytes, params: SecAggParams) -> np.ndarray:
    return np.frombuffer(payload, dtype=f"<u{params.width}").astype(np.uint64)


def _ring(values: np.ndarray, bits: int) -> np.ndarray:
    return values if bits == 64 else values & np.uint64((1 << bits) - 1)


def _adds(u: int, v: int) -> bool:
    """Whether u adds the pair's mask (u < v) or subtracts it: the two cancel in the sum."""
    return u < v


class Client:
    """One participant: its keys, its secrets and the shares others sent it."""

    def __init__(self, cid: int, neighbours: list[int], params: SecAggParams):
        self.cid, self.neighbours, self.params = cid, neighbours, params
        self.share_key, self.mask_key = crypto.keypair(), crypto.keypair()
        self.peers: dict[int, bytes] = {}               # neighbour -> its two public keys
        self.held: dict[int, tuple[int, bytes, bytes]] = {}  # owner -> (index, seed share, mask-key share)

    def advertise(self) -> bytes:
        return self.share_key[1] + self.mask_key[1]

    def share(self, keys: dict[int, bytes]) -> dict[int, bytes]:
        """Shares of a fresh self-mask seed and of the mask key for itself and each neighbour
        that advertised (`keys`: neighbour -> its public keys, as the server forwarded them);
        returns the neighbours' shares, each encrypted for its holder."""
        self.peers = {v: keys[v] for v in self.neighbours if v in keys}
        holders = sorted([*self.peers, self.cid])
        if len(holders) < self.params.threshold:
            raise SecAggAbort("share", f"client {self.cid} has {len(holders)} holders left for its shares (its "
                                       f"neighbours and itself), fewer than the threshold {self.params.threshold}")
        self.seed = crypto.fresh_secret()
        seeds = crypto.split(self.seed, self.params.threshold, len(holders))
        keys_ = crypto.split(crypto.private_bytes(self.mask_key[0]), self.params.threshold, len(holders))
        out = {}
        for i, v in enumerate(holders):
            if v == self.cid:
                self.held[v] = (i + 1, seeds[i], keys_[i])
                continue
            plaintext = _SHARE.pack(self.cid, v, i + 1) + seeds[i] + keys_[i]
            out[v] = crypto.seal(self._pair_key(v), plaintext, _HEADER.pack(self.cid, v))
        return out

    def mask(self, inbox: dict[int, bytes], shared: list[int], vector: np.ndarray) -> bytes:
        """Keep the shares others sent (`inbox`: owner -> ciphertext); return the masked input,
        masked with the neighbours in `shared` (those whose shares the server routed)."""
        for u, blob in inbox.items():
            plaintext = crypto.unseal(self._pair_key(u), blob, _HEADER.pack(u, self.cid))
            # the ciphertext authenticates (sender, recipient): a share for another holder fails to open
            _, _, index = _SHARE.unpack_from(plaintext)
            body = plaintext[_SHARE.size:]
            self.held[u] = (index, body[:crypto.SECRET_BYTES], body[crypto.SECRET_BYTES:])
        masked = vector.astype(np.uint64) + crypto.prg(self.seed, vector.size)
        for v in self.neighbours:
            if v in shared and v in self.peers:
                pair = crypto.prg(crypto.agree(self.mask_key[0], self.peers[v][32:], MASK_PURPOSE), vector.size)
                masked = masked + pair if _adds(self.cid, v) else masked - pair
        return encode(_ring(masked, self.params.bits), self.params)

    def unmask(self, survivors: list[int], dropped: list[int]) -> bytes:
        """The shares the server needs: of b_u for u in `survivors`, of the mask key for
        `dropped`; refuses to reveal both for one client, or anything to fewer than t."""
        if len(survivors) < self.params.threshold:
            raise SecAggAbort("unmask", f"the server names {len(survivors)} clients with masked inputs, fewer than "
                                        f"the threshold {self.params.threshold}")
        if set(survivors) & set(dropped):
            raise SecAggAbort("unmask", f"client {self.cid} was asked for both shares of clients "
                                        f"{sorted(set(survivors) & set(dropped))}")
        records = []
        for u in survivors:
            if u in self.held:
                index, seed, _ = self.held[u]
                records.append(_RECORD.pack(b"b", u, index) + seed)
        for u in dropped:
            if u in self.held:
                index, _, key = self.held[u]
                records.append(_RECORD.pack(b"s", u, index) + key)
        return b"".join(records)

    def _pair_key(self, v: int) -> bytes:
        return crypto.agree(self.share_key[0], self.peers[v][:32], SHARE_PURPOSE)


@dataclass
class Server:
    """The aggregator: it routes what it cannot read and learns only the sum over U3."""
    params: SecAggParams
    graph: list[list[int]]
    received: list[tuple[str, int, bytes]] = field(default_factory=list)  # (stage, sender, payload)

    def collect(self, stage: str, messages: dict[int, bytes]) -> list[int]:
        """Record a stage's messages; abort if fewer than t clients sent one. Returns the senders."""
        for sender, payload in sorted(messages.items()):
            self.received.append((stage, sender, payload))
        if len(messages) < self.params.threshold:
            raise SecAggAbort(stage, f"{len(messages)} of {self.params.clients} clients remain, fewer than the "
                                     f"threshold {self.params.threshold}")
        return sorted(messages)

    def forward_keys(self, keys: dict[int, bytes]) -> dict[int, dict[int, bytes]]:
        return {u: {v: keys[v] for v in self.graph[u] if v in keys} for u in keys}

    def route_shares(self, shares: dict[int, dict[int, bytes]]) -> dict[int, dict[int, bytes]]:
        inbox: dict[int, dict[int, bytes]] = {u: {} for u in shares}
        for owner, out in shares.items():
            for holder, blob in out.items():
                if holder in inbox:
                    inbox[holder][owner] = blob
        return inbox

    def check_groups(self, survivors: list[int]) -> None:
        """Abort if the survivors fall into groups of fewer than t joined by no mask: the
        masks would not hide such a group's sum."""
        left, members = set(survivors), set(survivors)
        while left:
            group, frontier = set(), [left.pop()]
            while frontier:
                u = frontier.pop()
                group.add(u)
                for v in self.graph[u]:
                    if v in members and v not in group:
                        frontier.append(v)
                        left.discard(v)
            if len(group) < self.params.threshold and len(group) < len(members):
                raise SecAggAbort("mask", f"the {len(members)} clients with masked inputs fall into groups joined by "
                                          f"no mask, one of {len(group)} (fewer than the threshold "
                                          f"{self.params.threshold}); its sum would be exposed")

    def unmask(self, masked: dict[int, bytes], dropped: list[int], responses: dict[int, bytes],
               keys: dict[int, bytes]) -> np.ndarray:
        """The sum over the clients in `masked`, from the shares in `responses`."""
        seeds: dict[int, dict[int, bytes]] = {}
        mask_keys: dict[int, dict[int, bytes]] = {}
        size = _RECORD.size + crypto.SECRET_BYTES
        for payload in responses.values():
            for at in range(0, len(payload), size):
                kind, owner, index = _RECORD.unpack_from(payload, at)
                (seeds if kind == b"b" else mask_keys).setdefault(owner, {})[index] = \
                    payload[at + _RECORD.size:at + size]
        total = np.sum([decode(payload, self.params) for payload in masked.values()], axis=0, dtype=np.uint64)
        for u in masked:
            total = total - crypto.prg(self._rebuild(u, seeds, "self-mask seed"), total.size)
        for u in dropped:
            key = crypto.private_key(self._rebuild(u, mask_keys, "mask key"))
            for v in self.graph[u]:
                if v in masked:  # v added sign(v, u) PRG(s_vu); take it back
                    pair = crypto.prg(crypto.agree(key, keys[v][32:], MASK_PURPOSE), total.size)
                    total = total - pair if _adds(v, u) else total + pair
        return _ring(total, self.params.bits)

    def _rebuild(self, owner: int, shares: dict[int, dict[int, bytes]], what: str) -> bytes:
        got = shares.get(owner, {})
        if len(got) < self.params.threshold:
            raise SecAggAbort("unmask", f"{len(got)} shares of client {owner}'s {what} came back, fewer than the "
                                        f"threshold {self.params.threshold}")
        return crypto.combine(got)


@dataclass
class SecAggResult:
    total: np.ndarray          # the sum over `included` in Z_{2^bits}
    included: list[int]        # the clients whose input is in the sum (U3)
    sent: list[int]            # bytes each client sent
    received: list[int]        # bytes each client was sent
    client_seconds: float      # all clients' protocol time, together
    server_seconds: float
    server: Server


def secure_sum(vectors: list[np.ndarray], params: SecAggParams, rng: np.random.Generator,
               drops: dict[str, set[int]] | None = None) -> SecAggResult:
    """Run the protocol on `vectors` (client u holds vectors[u], elements of Z_{2^bits});
    `drops[stage]`: the clients that drop at that stage (send nothing from it on). `rng`
    draws the public neighbourhood graph; keys, seeds and shares come from the OS."""
    drops = drops or {}
    unknown = set().union(*drops.values()) - set(range(params.clients)) if drops else set()
    if unknown or set(drops) - set(STAGES):
        raise ValueError(f"drop-outs must map stages {STAGES} to clients 0..{params.clients - 1}; got {drops}")
    graph = neighbourhood(params, rng)
    server, wire, clock = Server(params, graph), _Wire(params.clients), _Clock()
    clients = [Client(u, graph[u], params) for u in range(params.clients)]
    gone: set[int] = set()

    def remaining(stage: str) -> list[Client]:
        gone.update(drops.get(stage, ()))
        return [c for c in clients if c.cid not in gone]

    keys = {}
    for c in remaining("advertise"):
        keys[c.cid] = clock.client(c.advertise)
        wire.up(c.cid, keys[c.cid])
    forwarded = clock.server(lambda: server.collect("advertise", keys) and server.forward_keys(keys))

    shares = {}
    for c in remaining("share"):
        wire.down(c.cid, *forwarded[c.cid].values())
        shares[c.cid] = clock.client(c.share, forwarded[c.cid])
        wire.up(c.cid, *(_HEADER.pack(c.cid, v) + b for v, b in shares[c.cid].items()))
    inbox = clock.server(lambda: server.collect("share", _joined(shares)) and server.route_shares(shares))
    shared = sorted(shares)

    masked = {}
    for c in remaining("mask"):
        wire.down(c.cid, *inbox[c.cid].values(), struct.pack(f"<{len(shared)}I", *shared))
        masked[c.cid] = clock.client(c.mask, inbox[c.cid], shared, vectors[c.cid])
        wire.up(c.cid, masked[c.cid])
    survivors = clock.server(lambda: server.collect("mask", masked))
    dropped = sorted(set(shared) - set(survivors))
    clock.server(server.check_groups, survivors)

    responses = {}
    for c in remaining("unmask"):
        wire.down(c.cid, struct.pack(f"<{len(survivors) + len(dropped)}I", *survivors, *dropped))
        responses[c.cid] = clock.client(c.unmask, survivors, dropped)
        wire.up(c.cid, responses[c.cid])
    total = clock.server(lambda: server.collect("unmask", responses) and
                         server.unmask(masked, dropped, responses, keys))
    return SecAggResult(total, survivors, wire.sent, wire.received, clock.client_seconds, clock.server_seconds,
                        server)


def _joined(shares: dict[int, dict[int, bytes]]) -> dict[int, bytes]:
    """Each client's share messages as the bytes the server receives: (sender, recipient) + ciphertext."""
    return {u: b"".join(_HEADER.pack(u, v) + b for v, b in out.items()) for u, out in shares.items()}


class _Wire:
    """Bytes each client sends and is sent."""

    def __init__(self, clients: int):
        self.sent, self.received = [0] * clients, [0] * clients

    def up(self, cid: int, *payloads: bytes) -> None:
        self.sent[cid] += sum(len(p) for p in payloads)

    def down(self, cid: int, *payloads: bytes) -> None:
        self.received[cid] += sum(len(p) for p in payloads)


class _Clock:
    """Protocol time on the clients (all together) and on the server."""

    def __init__(self):
        self.client_seconds = self.server_seconds = 0.0

    def client(self, step, *args):
        start = time.perf_counter()
        out = step(*args)
        self.client_seconds += time.perf_counter() - start
        return out

    def server(self, step, *args):
        start = time.perf_counter()
        out = step(*args)
        self.server_seconds += time.perf_counter() - start
        return out
