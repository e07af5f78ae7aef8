// The portal's only script. Pages work without it (the status page refreshes itself through
// <noscript>); with it: focus goes to the error summary, the language toggle keeps the answers
// of a form page, and the status page updates in place and announces changes politely.
"use strict";

(function () {
  function focusErrorSummary() {
    var summary = document.getElementById("error-summary");
    if (!summary || !window.customElements) return;
    customElements.whenDefined("gcds-error-summary").then(function () {
      return summary.componentOnReady ? summary.componentOnReady() : null;
    }).then(function () {
      var box = summary.shadowRoot && summary.shadowRoot.querySelector("[role=alert]");
      (box || summary).focus();
    });
  }

  // On a form page, the header's language link would drop the answers: press the form's own
  // "continue in the other language" button instead, which posts them.
  function keepAnswersOnLanguageSwitch() {
    var form = document.querySelector("form[data-journey]");
    if (!form) return;
    document.addEventListener("click", function (event) {
      var path = event.composedPath ? event.composedPath() : [];
      var onToggle = path.some(function (node) {
        return node.tagName === "GCDS-LANG-TOGGLE";
      });
      if (!onToggle) return;
      var host = form.querySelector('gcds-button[value="language"]');
      if (!host) return;
      event.preventDefault();
      event.stopPropagation();
      // The real <button> is inside the component's shadow root; clicking it submits the form.
      var button = host.shadowRoot && host.shadowRoot.querySelector("button");
      (button || host).click();
    }, true);
  }

  function followStatus() {
    var main = document.querySelector("main[data-live]");
    if (!main || main.getAttribute("data-final") === "true" || !window.fetch) return;
    var url = main.getAttribute("data-live");
    var announcer = document.getElementById("status-announcer");
    var timer = window.setInterval(poll, 4000);

    function setText(element, text) {
      if (element && element.textContent !== text) element.textContent = text;
    }

    function poll() {
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (status) {
          if (!status) return;
          var changes = [];
          var overall = document.getElementById("overall-state");
          if (overall && overall.getAttribute("data-state") !== status.state) {
            overall.setAttribute("data-state", status.state);
            setText(overall, status.state_label);
            changes.push(status.state_label);
          }
          status.steps.forEach(function (step) {
            var row = document.getElementById("step-" + step.id);
            if (!row) return;
            var state = row.querySelector(".portal-state");
            if (state.getAttribute("data-state") !== step.state) {
              state.setAttribute("data-state", step.state);
              setText(state, step.state_label);
              changes.push(step.program + ": " + step.state_label);
            }
            var message = row.querySelector(".portal-message");
            setText(message, step.details);
          });
          if (changes.length && announcer) setText(announcer, changes.join(". "));
          if (status.final) {
            window.clearInterval(timer);
            main.setAttribute("data-final", "true");
            // A final request neither updates any more nor can be withdrawn.
            var open = document.getElementById("while-open");
            if (open) open.hidden = true;
          }
        })
        .catch(function () { /* the next poll tries again */ });
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    focusErrorSummary();
    keepAnswersOnLanguageSwitch();
    followStatus();
  });
})();
