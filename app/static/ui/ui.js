// gatekeeper pages: a little vanilla JavaScript, no build step.
"use strict";
(function () {
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content;

  // Forms that ask before they change which model routes the next series.
  document.querySelectorAll("form.confirm").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });

  // Contour upload: the file goes to the API's own upload (POST /queue/{id}/contour) with the session's
  // CSRF token in X-CSRF-Token; the API validates it against the series' grid exactly as for any client.
  const contour = document.getElementById("contour-form");
  if (contour) {
    contour.addEventListener("submit", async function (event) {
      event.preventDefault();
      const out = document.getElementById("contour-result");
      const file = document.getElementById("contour-file").files[0];
      if (!file) return;
      const type = /\.(nii\.gz|gz)$/i.test(file.name) ? "application/gzip" : "application/dicom";
      out.textContent = "uploading…";
      const reply = await fetch("/queue/" + contour.dataset.case + "/contour", {
        method: "POST", body: file, credentials: "same-origin",
        headers: {"Content-Type": type, "X-CSRF-Token": csrf},
      });
      const body = await reply.json().catch(function () { return {}; });
      if (reply.ok) {
        window.location.reload();
      } else {
        out.className = "error";
        out.textContent = "refused (" + reply.status + "): " + (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail));
      }
    });
  }
})();
