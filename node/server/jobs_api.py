"""The compute-job endpoints of the HTTP API (docs/api.md §Jobs, docs/jobs-client.md): prices, a job's record
(with long-poll), progress and receipt, an account's jobs and the job lists. Registered by node.server.api.make_app."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from chain.keys import parse_address
from node.server.apiargs import API, hexarg, query_int
from node.server.apiargs import json_response as _json
from node.server.apierror import ApiError

if TYPE_CHECKING:
    from node.server.interfaces import JobsHost

JOB_WAIT_MAX_S = 30  # longest long-poll of GET /jobs/{id}?wait=


def job_routes(r: web.RouteTableDef, node: JobsHost) -> None:
    # client views (node/server/jobinfo.py); /jobs/price is registered before /jobs/{id} so it is not read as an id
    @r.get(API + "/jobs/price")
    async def job_price_view(request):
        from chain.errors import TxError
        from node.server import jobinfo

        try:
            m, k, n = (int(request.query[x]) for x in ("m", "k", "n"))
            window = int(request.query.get("blocks", str(jobinfo.RECENT_BLOCKS)))
        except (KeyError, ValueError):
            raise ApiError(400, "bad-param", "m, k and n (and blocks) must be integers") from None
        if min(m, k, n) <= 0 or not 1 <= window <= 10_000:
            raise ApiError(400, "bad-param", "m, k, n must be positive and blocks in [1, 10000]")
        try:
            return _json(jobinfo.price(node, m, k, n, window))
        except TxError as e:
            raise ApiError(400, e.reason, e.detail or e.reason) from None

    @r.get(API + "/jobs/{id}/progress")
    async def job_progress(request):
        from node.server import jobinfo

        jid = hexarg(request.match_info["id"], "job id", 32)
        out = jobinfo.progress(node, jid)
        if out is None:
            raise ApiError(404, "job-not-found", "no job with this id on the active chain or in the mempool")
        return _json(out)

    @r.get(API + "/jobs/{id}/receipt")
    async def job_receipt(request):
        from node.server import jobinfo

        jid = hexarg(request.match_info["id"], "job id", 32)
        out = jobinfo.receipt(node, jid)
        if out is None:
            raise ApiError(404, "job-not-found", "no job with this id on the active chain")
        return _json(out)

    @r.get(API + "/accounts/{address}/jobs")
    async def account_jobs(request):
        from chain.jobs import STATUS_NAMES
        from node.server import jobinfo

        try:
            a = parse_address(request.match_info["address"])
        except ValueError as e:
            raise ApiError(400, "bad-address", str(e)) from None
        status = request.query.get("status", "all")
        if status not in STATUS_NAMES and status not in ("all", "pending"):
            raise ApiError(400, "bad-param", "status must be all, pending or one of " + ", ".join(STATUS_NAMES))
        try:
            limit = min(1000, max(1, int(request.query.get("limit", "100"))))
        except ValueError:
            raise ApiError(400, "bad-param", "limit must be an integer") from None
        return _json(jobinfo.jobs_of(node, a, status, limit))

    def job_json(jid: bytes, rec) -> dict:
        """A job record for the API, with this node's fee floor: `floor_fee` (the least fee its miner
        takes for this shape) and `below_floor` (true: this node's miner will not take it)."""
        from node.server.jobinfo import below_floor, floor_fee

        d = rec.to_json(jid, node.cfg)
        rate = node.job_fee_floor
        d["floor_fee"] = floor_fee(rate, rec.macs)
        d["below_floor"] = below_floor(rate, rec.fee, rec.macs)
        return d

    @r.get(API + "/jobs/{id}")
    async def get_job(request):
        """The job's record. Long-poll: with `wait=S` (seconds, at most 30), `status=X` and `pending=H` (the
        status and pending result h_c the client saw last, H empty for none), a job still in that state is
        answered only after the next block or job transaction (or S seconds)."""
        jid = hexarg(request.match_info["id"], "job id", 32)
        wait = min(JOB_WAIT_MAX_S, query_int(request, "wait", 0))
        seen = (request.query.get("status"), request.query.get("pending", ""))
        d = job_doc(jid)
        if wait and seen[0] is not None and (d["status"], (d.get("pending_result") or {}).get("h_c", "")) == seen:
            await node.wait_job_event(wait)
            d = job_doc(jid)
        return _json(d)

    def job_doc(jid: bytes) -> dict:
        rec = node.chain.get_job(jid)
        if rec is None:
            if node.mempool.get(jid) is not None:
                return {
                    "job_id": jid.hex(),
                    "status": "pending",
                    "height": node.chain.height,
                    "pending_result": pending_result(jid),
                }
            raise ApiError(404, "job-not-found", "no job with this id on the active chain or in the mempool")
        d = job_json(jid, rec)
        d["height"] = node.chain.height
        if rec.status_name in ("open", "claimed"):
            d["pending_result"] = pending_result(jid)
        return d

    def pending_result(jid: bytes) -> dict | None:
        """A result for `jid` waiting in the mempool (admitted only while this node holds its C, so C can
        be fetched and checked now, before the result is mined): {txid, miner, h_c}, else None."""
        from chain.tx import KIND_JOB_RESULT

        for e in node.mempool.entries.values():
            t = e.tx
            if t.kind == KIND_JOB_RESULT and t.payload.job_id == jid:
                return {"txid": t.txid.hex(), "miner": t.sender.hex(), "h_c": t.payload.h_c.hex()}
        return None

    @r.get(API + "/jobs")
    async def list_jobs(request):
        from chain.jobs import STATUS_NAMES

        status = request.query.get("status", "open")
        limit = min(1000, max(1, query_int(request, "limit", 100)))
        cs = node.chain
        if status == "open":
            items = cs.open_jobs()
        elif status == "live":
            items = sorted(cs.live_jobs().items(), key=lambda x: (x[1].due, x[0]))
        elif status in STATUS_NAMES or status == "all":
            items = sorted(
                ((j, r) for j, r in cs.jobs().items() if status == "all" or r.status_name == status),
                key=lambda x: (-x[1].submit_height, x[0]),
            )
        else:
            raise ApiError(
                400, "bad-param", "status must be open (claimable), live, all or one of " + ", ".join(STATUS_NAMES)
            )
        return _json(
            {
                "status": status,
                "height": cs.height,
                "count": len(items),
                "jobs": [job_json(j, r) for j, r in items[:limit]],
            }
        )
