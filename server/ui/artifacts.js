// The artifacts page: upload with a progress bar, list, delete.
import { useState, useRef } from '/ui/vendor/hooks.mjs'
import { html } from './html.js'
import { ApiError, api, errorFrom, parseBody, session } from './api.js'
import { ErrorBox, Progress } from './components.js'
import { fmtBytes, fmtTime, short } from './format.js'
import { useResource } from './live.js'

/** PUT with XMLHttpRequest: fetch() has no upload progress. */
export function uploadArtifact (name, file, onProgress, replace = false) {
  const xhr = new XMLHttpRequest()
  const done = new Promise((resolve, reject) => {
    xhr.open('PUT', `/api/artifacts/${encodeURIComponent(name)}${replace ? '?replace=1' : ''}`)
    xhr.setRequestHeader('authorization', `Bearer ${session.token}`)
    xhr.setRequestHeader('content-type', 'application/octet-stream')
    xhr.upload.onprogress = e => { if (e.lengthComputable) onProgress(e.loaded, e.total) }
    xhr.onload = () => {
      const body = parseBody(xhr.responseText)
      if (xhr.status === 401) session.signOut('The server refused the token (it may have been revoked). Sign in again.')
      if (xhr.status >= 200 && xhr.status < 300) resolve(body)
      else reject(errorFrom(xhr.status, body, xhr.statusText))
    }
    xhr.onerror = () => reject(new ApiError(0, 'NETWORK', 'the upload failed (network error)'))
    xhr.onabort = () => reject(new ApiError(0, 'ABORTED', 'upload cancelled'))
    xhr.send(file)
  })
  return { done, abort: () => xhr.abort() }
}

export function ArtifactsPage () {
  const [list, refresh] = useResource(async () => ({ data: await api('GET', '/api/artifacts') }), [], ['artifacts'])
  const [file, setFile] = useState(null)
  const [name, setName] = useState('')
  const [upload, setUpload] = useState(null)
  const [error, setError] = useState(null)
  const inputRef = useRef(null)

  const start = async (e, replace = false) => {
    e.preventDefault()
    if (file === null) return
    const target = name.trim() || file.name
    setError(null)
    const state = { name: target, loaded: 0, total: file.size, events: 0, done: false, result: null }
    const job = uploadArtifact(target, file, (loaded, total) => {
      state.loaded = loaded
      state.total = total
      state.events++
      setUpload({ ...state, abort: job.abort })
    }, replace)
    setUpload({ ...state, abort: job.abort })
    try {
      const result = await job.done
      setUpload({ ...state, loaded: state.total, done: true, result })
      setFile(null)
      setName('')
      if (inputRef.current !== null) inputRef.current.value = ''
      refresh()
    } catch (err) {
      setUpload(null)
      setError(err)
    }
  }
  const remove = async a => {
    if (!confirm(`Delete artifact ${a.name}?`)) return
    try {
      await api('DELETE', `/api/artifacts/${encodeURIComponent(a.name)}`)
      refresh()
    } catch (err) {
      setError(err)
    }
  }
  const pct = upload === null || upload.total === 0 ? 0 : upload.loaded / upload.total
  const busy = upload !== null && !upload.done
  return html`<section data-page="artifacts">
    <div class="page-head"><div><h1>Artifacts</h1><div class="sub muted">Files the server stores by sha256; relays cache them for their agents.</div></div></div>
    <form class="card" onSubmit=${start}>
      <h2>Upload</h2>
      <div class="form-row">
        <label>File<input type="file" name="file" ref=${inputRef} onChange=${e => { setFile(e.target.files[0] ?? null); setUpload(null) }} /></label>
        <label>Name <span class="hint">defaults to the file name</span><input name="artifactName" value=${name} onInput=${e => setName(e.target.value)} placeholder=${file?.name ?? 'app-1.2.tar.gz'} /></label>
        <button class="btn primary" type="submit" disabled=${file === null || busy}>Upload</button>
        ${busy ? html`<button class="btn" type="button" onClick=${() => upload.abort()}>Cancel</button>` : null}
      </div>
      ${upload !== null ? html`<div style=${{ marginTop: '14px' }} data-testid="upload" data-done=${String(upload.done)} data-progress-events=${upload.events}>
        <div class="btn-row small"><strong>${upload.name}</strong><span class="muted">${fmtBytes(upload.loaded)} of ${fmtBytes(upload.total)}</span></div>
        <${Progress} value=${pct} state=${upload.done ? 'succeeded' : 'running'} />
        ${upload.done ? html`<div class="success" style=${{ marginTop: '8px' }}>Uploaded ${upload.result?.name ?? upload.name}: ${fmtBytes(upload.result?.size)}, sha256 <span class="mono">${short(upload.result?.sha256, 16)}</span></div>` : null}
      </div>` : null}
    </form>
    <${ErrorBox} error=${error ?? list.error} what="artifacts" />
    ${error?.code === 'RG_ERR_ARTIFACT_EXISTS' && file !== null
      ? html`<div class="btn-row"><button class="btn danger" data-testid="replace-artifact" onClick=${e => start(e, true)}>Replace ${name.trim() || file.name}</button></div>`
      : null}
    <div class="table-wrap">
      <table data-testid="artifacts-table">
        <thead><tr><th>Name</th><th>Size</th><th>sha256</th><th>Uploaded</th><th></th></tr></thead>
        <tbody>
          ${(list.data ?? []).length === 0 && !list.loading
            ? html`<tr><td class="empty" colspan="5">No artifacts yet.</td></tr>`
            : (list.data ?? []).map(a => html`<tr key=${a.name} data-artifact=${a.name}>
                <td>${a.name}</td><td>${fmtBytes(a.size)}</td>
                <td class="mono" title=${a.sha256}>${short(a.sha256, 16)}</td>
                <td>${fmtTime(a.createdAt)}</td>
                <td class="actions"><button class="btn small danger" onClick=${() => remove(a)}>Delete</button></td>
              </tr>`)}
        </tbody>
      </table>
    </div>
  </section>`
}
