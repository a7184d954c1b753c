// userimport console: small enhancements of pages that work without this script.
// - selects marked data-autosubmit submit their form when changed;
// - a form marked data-live="#target" refreshes #target as its fields change (search as you type);
// - a checkbox marked data-select-all="name" ticks every box of that name in its form;
// - a section marked data-events="url" follows a job through server-sent events.
"use strict";

(function () {
  function debounce(fn, ms) {
    let timer = null;
    return function () {
      clearTimeout(timer);
      timer = setTimeout(fn, ms);
    };
  }

  document.addEventListener("change", function (event) {
    const target = event.target;
    if (target.matches("select[data-autosubmit]")) {
      target.form.submit();
    }
    if (target.matches("input[data-select-all]")) {
      const name = target.getAttribute("data-select-all");
      target.form.querySelectorAll('input[type="checkbox"][name="' + name + '"]').forEach(function (box) {
        box.checked = target.checked;
      });
    }
  });

  document.querySelectorAll("form[data-live]").forEach(function (form) {
    const target = document.querySelector(form.getAttribute("data-live"));
    if (!target) return;
    let latest = 0;
    const refresh = function () {
      const query = new URLSearchParams(new FormData(form)).toString();
      const asked = ++latest;
      fetch(form.action + "?" + query + "&fragment=results", { credentials: "same-origin" })
        .then(function (response) {
          if (!response.ok) throw new Error(response.status);
          return response.text();
        })
        .then(function (html) {
          // An older answer arriving after a newer one is dropped.
          if (asked !== latest) return;
          target.innerHTML = html;
          history.replaceState(null, "", form.action + "?" + query);
        })
        .catch(function () {
          form.submit();
        });
    };
    const later = debounce(refresh, 250);
    form.querySelectorAll("[data-live-input]").forEach(function (input) {
      input.addEventListener(input.type === "search" || input.type === "text" ? "input" : "change", later);
    });
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      refresh();
    });
  });

  const result = document.getElementById("import-result");
  if (result) result.focus();

  document.querySelectorAll("[data-events]").forEach(function (section) {
    const source = new EventSource(section.getAttribute("data-events"));
    const set = function (id, value) {
      const element = document.getElementById(id);
      if (element) element.textContent = value;
    };
    source.addEventListener("job", function (event) {
      const job = JSON.parse(event.data);
      const bar = document.getElementById("job-progress");
      if (bar) {
        bar.value = job.percent;
        bar.textContent = job.percent + "%";
      }
      set("job-percent", job.percent + "%");
      set("job-status", job.status);
      set("job-planned", job.planned);
      set("job-created", job.created);
      set("job-already-present", job.already_present);
      set("job-skipped", job.skipped);
      set("job-failed", job.failed);
      set("job-chunks-done", job.chunks_done);
      set("job-chunks-planned", job.chunks_planned);
      const error = document.getElementById("job-error");
      if (error && job.error) {
        error.textContent = job.error;
        error.hidden = false;
      }
      if (job.ended) {
        // The stream ends with the job; without this the browser would reconnect.
        source.close();
        section.setAttribute("data-ended", "true");
      }
    });
  });
})();
